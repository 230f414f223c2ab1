"""Level-0 resolution (µm/px): where it is read from, when it is plausible, how users give it.

The paper excludes slides without a resolution; tseg-rt refuses them (and implausible values)
with an error naming the file and the override (:data:`MPP_FIX`). Sources of the value, in
order: an explicit override (``mpp=`` / ``--mpp`` / a slides CSV), OpenSlide's
``openslide.mpp-x`` / ``openslide.mpp-y``, OME ``PhysicalSizeX/Y`` (any length unit), and the
TIFF ``X/YResolution`` tags with their ``ResolutionUnit`` (inch or centimetre).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.errors import ImplausibleMppError, InvalidArgumentError, MissingMppError
from tseg.runtime.wsi.base import as_float
from tseg.runtime.wsi.limits import MAX_SLIDE_MM

#: Resolution the network sees (paper: 1 µm/px) and of the overview image (5 µm/px).
NETWORK_MPP = 1.0
OVERVIEW_MPP = 5.0
#: Level-0 resolutions outside this range are treated as wrong metadata. Scanners write about
#: 0.1-0.5 µm/px at level 0; 20 µm/px would already be a thumbnail.
PLAUSIBLE_MPP = (0.02, 20.0)
#: A request may be at most this much finer than level 0 (rounding in the metadata); anything
#: finer would be upsampling, which the paper rules out.
UPSAMPLE_TOLERANCE = 0.01
#: How to supply a resolution, in the terms of each audience (see SlideError.fix).
MPP_FIX = {"api": "Pass the level-0 resolution explicitly: open_slide(path, mpp=MICRONS_PER_PIXEL) or "
                  "Segmenter(..., mpp=MICRONS_PER_PIXEL).",
           "cli": "Pass the level-0 resolution explicitly: --mpp MICRONS_PER_PIXEL, or an mpp column in a "
                  "--csv slides table for per-slide values."}
#: For an image too coarse to segment: its metadata is right, so --mpp only helps if it is not.
LOW_RESOLUTION_FIX = {"api": "If that resolution is wrong, pass the true one: open_slide(path, mpp=MICRONS_PER_PIXEL).",
                      "cli": "If that resolution is wrong, pass the true one: --mpp MICRONS_PER_PIXEL."}
#: µm/px of the dots-per-inch defaults image software writes (not a scanner's resolution).
DEFAULT_DPI = (72, 96, 150, 300)
#: An override is reported when it differs from plausible metadata by more than this fraction.
MPP_OVERRIDE_TOLERANCE = 0.01
#: Every length unit of OME's ``UnitsLength`` enumeration (OME schema 2016-06), in µm, plus the
#: spellings seen in files ("um", "micron", Greek mu, the Ångström sign). "pixel" and "reference
#: frame" are not lengths: no resolution.
OME_UNITS_UM = {
    "Ym": 1e30, "Zm": 1e27, "Em": 1e24, "Pm": 1e21, "Tm": 1e18, "Gm": 1e15, "Mm": 1e12, "km": 1e9, "hm": 1e8,
    "dam": 1e7, "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "\u00b5m": 1.0, "nm": 1e-3, "pm": 1e-6, "fm": 1e-9,
    "am": 1e-12, "zm": 1e-15, "ym": 1e-18, "\u00c5": 1e-4, "thou": 25.4, "li": 25400.0 / 12, "in": 25400.0,
    "ft": 304800.0, "yd": 914400.0, "mi": 1609344e3, "ua": 149597870700e6, "ly": 9460730472580800e6,
    "pc": 3.0856775814913673e22, "pt": 25400.0 / 72,
    "um": 1.0, "micron": 1.0, "\u03bcm": 1.0, "\u212b": 1e-4,
}


def check_mpp(path: Path, mpp: tuple[float | None, float | None], origin: str,
              size_px: tuple[int, int] | None = None) -> tuple[float, float]:
    """``(x, y)`` µm/px, one axis standing in for a missing other; MissingMppError when neither
    is known, ImplausibleMppError outside :data:`PLAUSIBLE_MPP` (``origin``: "given", "stored").
    A stored resolution too coarse for level 0 whose image (``size_px``) still has a slide's size
    is said to be a low-resolution image (one coarse level of a pyramid), not wrong metadata."""
    mx, my = mpp
    if mx is None and my is None:
        raise MissingMppError(
            path,
            "the slide has no resolution (µm per pixel) metadata; the paper excludes such "
            "slides.", MPP_FIX,
        )
    mx = mx if mx is not None else my
    my = my if my is not None else mx
    lo, hi = PLAUSIBLE_MPP
    default_dpi = next((d for d in DEFAULT_DPI if mx is not None and abs(mx - 25400.0 / d) < 0.01), None)
    if (origin == "stored" and size_px is not None and mx is not None and my is not None and min(mx, my) > hi
            and default_dpi is None):
        w_mm, h_mm = size_px[0] * mx / 1000.0, size_px[1] * my / 1000.0
        if max(w_mm, h_mm) <= MAX_SLIDE_MM:
            raise ImplausibleMppError(
                path,
                f"its finest image is {mx:.4g} x {my:.4g} µm/px ({size_px[0]} x {size_px[1]} px, {w_mm:.3g} x "
                f"{h_mm:.3g} mm): a low-resolution picture of the slide (a thumbnail, or one coarse level of a "
                f"pyramid), too coarse for the model, which reads tissue at {NETWORK_MPP:g} µm/px and never "
                "upsamples. Give the slide's full-resolution scan (for DICOM, the series folder with its "
                "full-resolution level).", LOW_RESOLUTION_FIX,
            )
    for value in (mx, my):
        if value is None or not (lo <= value <= hi):
            raise ImplausibleMppError(
                path,
                f"the {origin} resolution {mx} x {my} µm/px is outside the plausible range "
                f"{lo}-{hi} µm/px for a whole-slide image (scanners write about 0.1-0.5 at "
                f"level 0), so the metadata is probably wrong"
                + (f" (it is the {default_dpi} dpi default of image software)." if default_dpi else "."), MPP_FIX,
            )
    return (float(mx), float(my))  # type: ignore[arg-type]


def plausible_mpp(mpp: tuple[float | None, float | None]) -> tuple[float, float] | None:
    """Stored metadata ``(x, y)`` when it is plausible (one axis standing in for the other), else None."""
    mx, my = mpp
    mx = mx if mx is not None else my
    my = my if my is not None else mx
    lo, hi = PLAUSIBLE_MPP
    if mx is None or my is None or not (lo <= mx <= hi and lo <= my <= hi):
        return None
    return (float(mx), float(my))


def resolve_mpp(path: Path, given: float | Sequence[float] | None, stored: tuple[float | None, float | None],
                size_px: tuple[int, int] | None = None) -> tuple[tuple[float, float], str, tuple[float, float] | None]:
    """The level-0 resolution to use: ``(mpp, origin, overridden)``. ``origin`` is ``override``
    for a ``given`` value, else ``metadata``; ``overridden`` is the plausible stored value that
    a given one replaced when they differ by more than :data:`MPP_OVERRIDE_TOLERANCE` (to warn
    about), else None. ``size_px``: level 0's size, to word the refusal of a coarse image."""
    if given is None:
        return check_mpp(path, stored, "stored", size_px), "metadata", None
    values = [float(given)] * 2 if isinstance(given, (int, float)) else [float(v) for v in given]
    if len(values) != 2:
        raise InvalidArgumentError(f"mpp must be a number or (x, y), got {given!r}")
    checked = check_mpp(path, (values[0], values[1]), "given")
    replaced = plausible_mpp(stored)
    if replaced is not None and all(abs(g - s) <= MPP_OVERRIDE_TOLERANCE * s for g, s in zip(checked, replaced)):
        replaced = None  # the override agrees with the metadata: nothing to report
    return checked, "override", replaced


def parse_mpp(text: str | float, what: str = "--mpp") -> float | tuple[float, float]:
    """A level-0 resolution given by a user: ``X`` or ``X,Y`` in µm/px, positive, finite and
    plausible for a whole-slide image; InvalidArgumentError naming ``what`` otherwise."""
    raw = str(text).strip()
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise InvalidArgumentError(f"{what} takes a number or X,Y in µm per pixel, got {raw!r}") from None
    if len(values) not in (1, 2):
        raise InvalidArgumentError(f"{what} takes a number or X,Y in µm per pixel, got {raw!r}")
    lo, hi = PLAUSIBLE_MPP
    for v in values:
        if not (v == v and v not in (float("inf"), float("-inf")) and v > 0):
            raise InvalidArgumentError(f"{what} must be a positive number of µm per pixel, got {raw!r}")
        if not lo <= v <= hi:
            raise InvalidArgumentError(f"{what} {raw} µm/px is outside the plausible range {lo}-{hi} µm/px for the "
                                       "level 0 of a whole-slide image (scanners write about 0.1-0.5)")
    return values[0] if len(values) == 1 else (values[0], values[1])


def openslide_mpp(properties: Mapping[str, str]) -> tuple[float | None, float | None]:
    """OpenSlide's ``openslide.mpp-x`` / ``openslide.mpp-y`` (None where missing or unparsable)."""
    return (as_float(properties.get("openslide.mpp-x")), as_float(properties.get("openslide.mpp-y")))


def ome_mpp(ome_xml: str, properties: dict[str, str]) -> tuple[float | None, float | None]:
    """OME ``Pixels`` ``PhysicalSizeX/Y`` in µm (their units converted); records what it found
    in ``properties`` (``ome.PhysicalSizeX`` ...)."""
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return (None, None)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return (None, None)
    result = []
    for axis in ("X", "Y"):
        size = as_float(pixels.get(f"PhysicalSize{axis}"))
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        scale = OME_UNITS_UM.get(unit)
        result.append(size * scale if size is not None and scale is not None else None)
        if size is not None:
            properties[f"ome.PhysicalSize{axis}"] = f"{size} {unit}"
    return (result[0], result[1])


def tiff_tag_mpp(tags: Any) -> tuple[float | None, float | None]:
    """µm/px from a TIFF page's ``XResolution``/``YResolution`` and ``ResolutionUnit`` (inch when
    absent; None for no unit, or no tag)."""
    unit = tags.get("ResolutionUnit")
    unit_value = int(unit.value) if unit is not None else 2
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit_value)
    result = []
    for name in ("XResolution", "YResolution"):
        tag = tags.get(name)
        if tag is None or um_per_unit is None:
            result.append(None)
            continue
        num, den = tag.value
        per_unit = num / den if den else 0.0
        result.append(um_per_unit / per_unit if per_unit > 0 else None)
    return (result[0], result[1])
