"""Whole-slide images read at a physical resolution (paper, *Downsampling*).

``open_slide(path)`` opens a slide with OpenSlide (through ``openslide-bin``, so no system
library is needed) or, for files OpenSlide cannot open but ``tifffile`` can (OME-TIFF pyramids
as QuPath and bfconvert write them, stripped TIFFs), with a small tifffile reader behind the
same interface. ``Slide.read(mpp, box)`` returns RGB pixels at ``mpp`` µm/px:

* the level-0 MPP comes from ``openslide.mpp-x`` / ``openslide.mpp-y`` (OME ``PhysicalSizeX/Y``
  on the tifffile path); ``mpp=`` overrides it; a slide with none, or an implausible value, is
  refused with an error naming the file and the ``--mpp`` override;
* the target downsampling factor is ``target_mpp / level0_mpp`` per axis; pixels are read from
  the coarsest pyramid level whose downsample does not exceed it on either axis (no upsampling)
  and shrunk with INTER_AREA to the exact target size (sizes are target sizes, so there is no
  off-by-one);
* large regions are read in blocks by a pool of threads (OpenSlide releases the GIL) and
  shrunk block by block with :func:`tseg.runtime.resample.area_resample`, which keeps memory
  bounded and assembles to the one-shot result within one 8-bit level.

Sizes at a resolution are ``floor(level0_size * level0_mpp / mpp)``: the image at ``mpp`` then
lies entirely inside the scanned area, and pixel ``(x, y)`` at ``mpp`` covers level-0 pixels
``[x * f, (x + 1) * f)`` with ``f = mpp / level0_mpp``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .errors import (
    ImplausibleMppError,
    InvalidArgumentError,
    MissingMppError,
    ResolutionError,
    SlideNotFoundError,
    SlideReadError,
    UnsupportedSlideError,
)
from .resample import area_resample

log = logging.getLogger(__name__)

#: Resolution the network sees (paper: 1 µm/px) and of the overview image (5 µm/px).
NETWORK_MPP = 1.0
OVERVIEW_MPP = 5.0
#: Level-0 resolutions outside this range are treated as wrong metadata. Scanners write about
#: 0.1-0.5 µm/px at level 0; 20 µm/px would already be a thumbnail.
PLAUSIBLE_MPP = (0.02, 20.0)
#: A request may be at most this much finer than level 0 (rounding in the metadata); anything
#: finer would be upsampling, which the paper rules out.
UPSAMPLE_TOLERANCE = 0.01
#: Source pixels per side of one block read by the blockwise reader.
DEFAULT_BLOCK_PX = 2048
DEFAULT_BACKGROUND = (255, 255, 255)
#: How to supply a resolution, in the terms of each audience (see SlideError.fix).
MPP_FIX = {"api": "Pass the level-0 resolution explicitly: open_slide(path, mpp=MICRONS_PER_PIXEL) or "
                  "Segmenter(..., mpp=MICRONS_PER_PIXEL).",
           "cli": "Pass the level-0 resolution explicitly: --mpp MICRONS_PER_PIXEL, or an mpp column in a "
                  "--csv slides table for per-slide values."}
#: An override is reported when it differs from plausible metadata by more than this fraction.
MPP_OVERRIDE_TOLERANCE = 0.01


def default_reader_threads() -> int:
    """Reader threads used when none are requested: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


class _Source(Protocol):
    """What a slide reader backend provides: pyramid geometry and raw level reads."""

    vendor: str
    level_dimensions: list[tuple[int, int]]
    properties: dict[str, str]
    background: tuple[int, int, int]

    def mpp(self) -> tuple[float | None, float | None]: ...

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 pixels of ``level`` in level coordinates (region inside the level)."""
        ...

    def associated_images(self) -> list[str]: ...

    def close(self) -> None: ...


# --- OpenSlide ------------------------------------------------------------------------------


def _rgba_to_rgb(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA on the slide's background colour."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    return np.clip(np.rint(rgb * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)


class _OpenSlideSource:
    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.properties = dict(self._slide.properties)
        self.vendor = self.properties.get("openslide.vendor", "unknown")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)
        colour = self.properties.get("openslide.background-color")
        self.background = (
            tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[assignment]
            if colour and re.fullmatch(r"[0-9A-Fa-f]{6}", colour)
            else DEFAULT_BACKGROUND
        )

    def mpp(self) -> tuple[float | None, float | None]:
        return (_as_float(self.properties.get("openslide.mpp-x")),
                _as_float(self.properties.get("openslide.mpp-y")))

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self._downsamples[level]
        location = (int(round(x * ds)), int(round(y * ds)))
        region = self._slide.read_region(location, level, (int(width), int(height)))
        return _rgba_to_rgb(np.asarray(region), self.background)

    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    def close(self) -> None:
        self._slide.close()


def _as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


# --- tifffile (OME-TIFF and TIFFs OpenSlide refuses) ---------------------------------------------

_OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "\u00b5m": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3,
                 "cm": 1e4, "m": 1e6, "pm": 1e-6}


class _TiffLevel:
    """Region reads from one tiled or stripped TIFF page (contig or planar RGB(A), uint8)."""

    def __init__(self, page: Any, lock: threading.Lock, path: Path) -> None:
        self.page = page
        self._lock = lock
        self._path = path
        if page.dtype is None or np.dtype(page.dtype) != np.uint8:
            raise UnsupportedSlideError(path, f"pixel type {page.dtype} is not 8-bit")
        samples = int(page.samplesperpixel)
        if samples not in (3, 4):
            raise UnsupportedSlideError(path, f"{samples} samples per pixel; RGB(A) is required")
        self.samples = samples
        self.separate = int(page.planarconfig) == 2
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        if page.is_tiled:
            self.chunk_w, self.chunk_h = int(page.tilewidth), int(page.tilelength)
        else:
            self.chunk_w, self.chunk_h = self.width, int(page.rowsperstrip or self.height)
        self.chunk_h = min(self.chunk_h, self.height) if not page.is_tiled else self.chunk_h
        self.across = -(-self.width // self.chunk_w)
        self.down = -(-self.height // self.chunk_h)

    def _chunk(self, index: int) -> np.ndarray:
        page = self.page
        with self._lock:
            fh = page.parent.filehandle
            fh.seek(page.dataoffsets[index])
            data = fh.read(page.databytecounts[index])
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if segment is None:
            raise SlideReadError(self._path, f"TIFF chunk {index} is empty or corrupt")
        return np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2], -1)

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = np.empty((height, width, 3), dtype=np.uint8)
        c0, c1 = x // self.chunk_w, (x + width - 1) // self.chunk_w
        r0, r1 = y // self.chunk_h, (y + height - 1) // self.chunk_h
        per_plane = self.across * self.down
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                cx, cy = c * self.chunk_w, r * self.chunk_h
                ix0, iy0 = max(x, cx), max(y, cy)
                ix1 = min(x + width, cx + self.chunk_w, self.width)
                iy1 = min(y + height, cy + self.chunk_h, self.height)
                if self.separate:
                    planes = [self._chunk(s * per_plane + r * self.across + c)[..., 0] for s in range(3)]
                    chunk = np.stack(planes, axis=-1)
                else:
                    chunk = self._chunk(r * self.across + c)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = chunk[
                    iy0 - cy : iy1 - cy, ix0 - cx : ix1 - cx, :3
                ]
        return out


class _TiffFileSource:
    def __init__(self, path: Path) -> None:
        import tifffile

        self._tif = tifffile.TiffFile(str(path))
        self._lock = threading.Lock()
        try:
            series = self._tif.series[0]
            levels = getattr(series, "levels", None) or [series]
            self._levels = [_TiffLevel(level.keyframe, self._lock, path) for level in levels]
        except UnsupportedSlideError:
            self._tif.close()
            raise
        except Exception as exc:  # tifffile raises many types for odd files
            self._tif.close()
            raise UnsupportedSlideError(path, f"tifffile cannot read the image: {exc}") from exc
        self.vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        self.level_dimensions = [(lv.width, lv.height) for lv in self._levels]
        self.background = DEFAULT_BACKGROUND
        self.properties = {"tseg.reader": "tifffile", "tseg.vendor": self.vendor}
        self._mpp = self._read_mpp()

    def _read_mpp(self) -> tuple[float | None, float | None]:
        if self._tif.is_ome and self._tif.ome_metadata:
            try:
                root = ET.fromstring(self._tif.ome_metadata)
            except ET.ParseError:
                return (None, None)
            pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
            if pixels is None:
                return (None, None)
            result = []
            for axis in ("X", "Y"):
                size = _as_float(pixels.get(f"PhysicalSize{axis}"))
                unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
                scale = _OME_UNITS_UM.get(unit)
                result.append(size * scale if size is not None and scale is not None else None)
                if size is not None:
                    self.properties[f"ome.PhysicalSize{axis}"] = f"{size} {unit}"
            return (result[0], result[1])
        page = self._tif.pages[0]
        tags = page.tags
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

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._levels[level].read(x, y, width, height)

    def associated_images(self) -> list[str]:
        return []

    def close(self) -> None:
        self._tif.close()


def _is_ome_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            header = fh.read(4)
        if header[:2] not in (b"II", b"MM"):
            return False
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:
        return False


# --- the public Slide -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadPlan:
    """How a resolution is read: the pyramid level and its pixels per target pixel."""

    level: int
    ratio: tuple[float, float]  # level pixels per target pixel, x and y


class Slide:
    """An open whole-slide image with a level-0 resolution in µm/px on each axis.

    Thread-safe for concurrent reads. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, source: _Source, mpp: tuple[float, float], mpp_source: str,
                 reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX) -> None:
        self.path = path
        self._source = source
        self.mpp_x, self.mpp_y = mpp
        self.mpp_source = mpp_source
        #: Plausible metadata that an override replaced (differing by > 1 %), else None.
        self.stored_mpp: tuple[float, float] | None = None
        self.reader_threads = reader_threads or default_reader_threads()
        if block_px < 64:
            raise InvalidArgumentError(f"block_px must be >= 64, got {block_px!r}")
        self.block_px = int(block_px)
        w0, h0 = source.level_dimensions[0]
        self.level_downsamples = [(w0 / w, h0 / h) for (w, h) in source.level_dimensions]

    # -- geometry --
    @property
    def vendor(self) -> str:
        return self._source.vendor

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._source.properties)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._source.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self._source.level_dimensions[0]

    @property
    def mpp(self) -> tuple[float, float]:
        return (self.mpp_x, self.mpp_y)

    @property
    def colour_correction(self) -> str | None:
        """What the reader corrected in the slide's colours (e.g. mislabelled YCbCr DICOM
        frames), or None."""
        return getattr(self._source, "colour_correction", None)

    @property
    def warnings(self) -> list[str]:
        """Things a user should know about how this slide was read (for summaries)."""
        notes = [] if self.colour_correction is None else [f"colours corrected: {self.colour_correction}"]
        stored = getattr(self, "stored_mpp", None)
        if self.mpp_source == "override" and stored is not None:
            notes.append(f"the given resolution {self.mpp_x:.4g} x {self.mpp_y:.4g} µm/px overrides the slide's "
                         f"plausible metadata {stored[0]:.4g} x {stored[1]:.4g} µm/px")
        return notes

    def size_mm(self) -> tuple[float, float]:
        w0, h0 = self.dimensions
        return (w0 * self.mpp_x / 1000.0, h0 * self.mpp_y / 1000.0)

    def factors(self, mpp: float) -> tuple[float, float]:
        """Target downsampling factor per axis: ``mpp / level0_mpp`` (paper, *Downsampling*)."""
        if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
            raise InvalidArgumentError(f"mpp must be a positive number, got {mpp!r}")
        fx, fy = mpp / self.mpp_x, mpp / self.mpp_y
        if min(fx, fy) < 1.0 - UPSAMPLE_TOLERANCE:
            raise ResolutionError(
                self.path,
                f"{mpp} µm/px is finer than the slide's level 0 ({self.mpp_x:.4g} x "
                f"{self.mpp_y:.4g} µm/px); tseg-rt never upsamples. If the slide's resolution "
                f"metadata is wrong:", MPP_FIX,
            )
        return (fx, fy)

    def size_at(self, mpp: float) -> tuple[int, int]:
        """``(width, height)`` of the whole slide at ``mpp`` µm/px."""
        fx, fy = self.factors(mpp)
        w0, h0 = self.dimensions
        return (max(1, int(math.floor(w0 / fx + 1e-9))), max(1, int(math.floor(h0 / fy + 1e-9))))

    def level_for(self, mpp: float) -> int:
        """The coarsest level whose downsample is <= the target factor on both axes."""
        fx, fy = self.factors(mpp)
        best = 0
        for level, (dx, dy) in enumerate(self.level_downsamples):
            if dx <= fx * (1 + 1e-9) and dy <= fy * (1 + 1e-9):
                if dx * dy >= self.level_downsamples[best][0] * self.level_downsamples[best][1]:
                    best = level
        return best

    def read_plan(self, mpp: float) -> ReadPlan:
        fx, fy = self.factors(mpp)
        level = self.level_for(mpp)
        dx, dy = self.level_downsamples[level]
        return ReadPlan(level, (fx / dx, fy / dy))

    # -- pixels --
    def read(self, mpp: float, box: tuple[int, int, int, int] | None = None,
             threads: int | None = None) -> np.ndarray:
        """RGB uint8 pixels of ``box = (x, y, width, height)`` (pixels at ``mpp``); default all."""
        full_w, full_h = self.size_at(mpp)
        if box is None:
            box = (0, 0, full_w, full_h)
        x, y, w, h = (int(v) for v in box)
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > full_w or y + h > full_h:
            raise InvalidArgumentError(
                f"box {box} is outside the slide, which is {full_w} x {full_h} px at {mpp} µm/px"
            )
        plan = self.read_plan(mpp)
        rx, ry = plan.ratio
        # Output block side (target px) so that a block reads about block_px source px per side.
        bw = max(1, min(w, int(self.block_px // max(rx, 1.0))))
        bh = max(1, min(h, int(self.block_px // max(ry, 1.0))))
        blocks = [(bx, by, min(bw, w - bx), min(bh, h - by))
                  for by in range(0, h, bh) for bx in range(0, w, bw)]
        out = np.empty((h, w, 3), dtype=np.uint8)
        lw, lh = self._source.level_dimensions[plan.level]

        def work(block: tuple[int, int, int, int]) -> None:
            bx, by, cw, ch = block
            a_x, a_y = (x + bx) * rx, (y + by) * ry
            b_x = min((x + bx + cw) * rx, float(lw))
            b_y = min((y + by + ch) * ry, float(lh))
            sx0, sy0 = int(math.floor(a_x + 1e-9)), int(math.floor(a_y + 1e-9))
            sx1 = min(lw, max(sx0 + 1, int(math.ceil(b_x - 1e-9))))
            sy1 = min(lh, max(sy0 + 1, int(math.ceil(b_y - 1e-9))))
            try:
                src = self._source.read_level(plan.level, sx0, sy0, sx1 - sx0, sy1 - sy0)
            except Exception as exc:  # OpenSlide/tifffile errors on corrupt tiles
                raise SlideReadError(self.path, f"reading level {plan.level} failed: {exc}") from exc
            out[by : by + ch, bx : bx + cw] = area_resample(
                src, (cw, ch), (rx, ry), (a_x - sx0, a_y - sy0)
            )

        n_threads = max(1, min(threads or self.reader_threads, len(blocks)))
        if n_threads == 1:
            for block in blocks:
                work(block)
        else:
            with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="tseg-read") as pool:
                for future in [pool.submit(work, b) for b in blocks]:
                    future.result()
        return out

    def overview(self, mpp: float = OVERVIEW_MPP) -> np.ndarray:
        """The whole slide at ``mpp`` (5 µm/px by default): background mask, display, evaluation."""
        return self.read(mpp)

    def info(self) -> dict[str, Any]:
        """Vendor, levels, MPP and physical size, for ``tseg-rt info``."""
        w_mm, h_mm = self.size_mm()
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "levels": [
                {"level": i, "dimensions": list(d),
                 "downsample": [round(v, 6) for v in self.level_downsamples[i]]}
                for i, d in enumerate(self.level_dimensions)
            ],
            "mpp": [self.mpp_x, self.mpp_y],
            "mpp_source": self.mpp_source,
            "size_mm": [round(w_mm, 4), round(h_mm, 4)],
            "size_at_1mpp": list(self.size_at(NETWORK_MPP)) if min(self.mpp) <= NETWORK_MPP * (1 + UPSAMPLE_TOLERANCE) else None,
            "size_at_5mpp": list(self.size_at(OVERVIEW_MPP)),
            "associated_images": self._source.associated_images(),
            "colour_correction": self.colour_correction,
            "warnings": self.warnings,
        }

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({str(self.path)!r}, {w}x{h} px, {self.mpp_x:.4g}x{self.mpp_y:.4g} µm/px, {self.vendor})"


def _check_mpp(path: Path, mpp: tuple[float | None, float | None], origin: str) -> tuple[float, float]:
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
    for value in (mx, my):
        if value is None or not (lo <= value <= hi):
            raise ImplausibleMppError(
                path,
                f"the {origin} resolution {mx} x {my} µm/px is outside the plausible range "
                f"{lo}-{hi} µm/px for a whole-slide image (scanners write about 0.1-0.5 at "
                f"level 0), so the metadata is probably wrong.", MPP_FIX,
            )
    return (float(mx), float(my))  # type: ignore[arg-type]


def _open_source(p: Path) -> _Source:
    """The reader for ``p``: DICOM series, OME-TIFF (tifffile), OpenSlide, then tifffile."""
    if not p.exists():
        raise SlideNotFoundError(p, "no such file or folder")
    from . import dicom

    if dicom.is_dicom_slide_path(p):
        return dicom.DicomSource(p)
    if p.is_dir():
        raise UnsupportedSlideError(p, "is a folder; give a slide file, a DICOM series folder, or use "
                                       "`tseg-rt run FOLDER` to search it")
    source: _Source | None = None
    errors: list[str] = []
    if _is_ome_tiff(p):
        return _TiffFileSource(p)
    import openslide

    try:
        source = _OpenSlideSource(p)
    except openslide.OpenSlideUnsupportedFormatError:
        errors.append("OpenSlide: unsupported or missing image file")
    except openslide.OpenSlideError as exc:
        errors.append(f"OpenSlide: {exc}")
    if source is None:
        try:
            source = _TiffFileSource(p)
        except UnsupportedSlideError as exc:
            errors.append(str(exc).split(": ", 1)[-1])
        except Exception as exc:
            errors.append(f"tifffile: {exc}")
    if source is None:
        raise UnsupportedSlideError(
            p,
            "not a slide format tseg-rt can read (" + "; ".join(errors) + "). Supported: the "
            "formats OpenSlide reads (Aperio .svs, Hamamatsu .ndpi, generic tiled TIFF, MIRAX, "
            "Philips, Leica, Ventana, DICOM series, ...) and OME-TIFF. Is the file complete?",
        )
    return source


def _plausible(mpp: tuple[float | None, float | None]) -> tuple[float, float] | None:
    mx, my = mpp
    mx = mx if mx is not None else my
    my = my if my is not None else mx
    lo, hi = PLAUSIBLE_MPP
    if mx is None or my is None or not (lo <= mx <= hi and lo <= my <= hi):
        return None
    return (float(mx), float(my))


def open_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None,
               reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX) -> Slide:
    """Open a whole-slide image (a file, or the folder of a DICOM series).

    ``mpp`` overrides the level-0 resolution (one value for both axes, or ``(x, y)``); when it
    differs from plausible metadata, :attr:`Slide.warnings` says so (and a warning is logged).
    Raises :class:`~tseg.runtime.errors.SlideNotFoundError`,
    :class:`~tseg.runtime.errors.UnsupportedSlideError`,
    :class:`~tseg.runtime.errors.MissingMppError` or
    :class:`~tseg.runtime.errors.ImplausibleMppError`, each naming the file and the fix.
    """
    p = Path(path)
    source = _open_source(p)
    stored = None
    try:
        if mpp is not None:
            values = [float(mpp)] * 2 if isinstance(mpp, (int, float)) else [float(v) for v in mpp]
            if len(values) != 2:
                raise InvalidArgumentError(f"mpp must be a number or (x, y), got {mpp!r}")
            checked = _check_mpp(p, (values[0], values[1]), "given")
            origin = "override"
            stored = _plausible(source.mpp())
            if stored is not None and all(abs(g - s) <= MPP_OVERRIDE_TOLERANCE * s for g, s in zip(checked, stored)):
                stored = None  # the override agrees with the metadata: nothing to report
            if stored is not None:
                log.warning("%s: the given resolution %.4g x %.4g µm/px overrides the slide's plausible metadata "
                            "%.4g x %.4g µm/px", p, checked[0], checked[1], stored[0], stored[1])
        else:
            checked = _check_mpp(p, source.mpp(), "stored")
            origin = "metadata"
    except Exception:
        source.close()
        raise
    slide = Slide(p, source, checked, origin, reader_threads=reader_threads, block_px=block_px)
    slide.stored_mpp = stored
    return slide


def describe_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None) -> dict[str, Any]:
    """What ``tseg-rt info`` shows: :meth:`Slide.info`, or, for a slide whose resolution is
    missing or implausible, its vendor, levels and sizes in pixels with the problem stated."""
    p = Path(path)
    try:
        with open_slide(p, mpp) as slide:
            return slide.info()
    except (MissingMppError, ImplausibleMppError) as exc:
        problem = exc
    source = _open_source(p)
    try:
        w0, h0 = source.level_dimensions[0]
        stored = source.mpp()
        return {
            "path": str(p),
            "vendor": source.vendor,
            "dimensions": [w0, h0],
            "levels": [{"level": i, "dimensions": list(d), "downsample": [round(w0 / d[0], 6), round(h0 / d[1], 6)]}
                       for i, d in enumerate(source.level_dimensions)],
            "mpp": None,
            "stored_mpp": [stored[0], stored[1]] if any(v is not None for v in stored) else None,
            "resolution": ("missing" if isinstance(problem, MissingMppError) else "implausible")
                          + f": {problem.message} Sizes in mm and at 1 / 5 µm/px are unknown.",
            "associated_images": source.associated_images(),
            "colour_correction": getattr(source, "colour_correction", None),
        }
    finally:
        source.close()
