"""Whole-slide images read at a physical resolution (paper, *Downsampling*).

``open_slide(path)`` opens a slide with OpenSlide (through ``openslide-bin``, so no system
library is needed) or, for files OpenSlide cannot open but ``tifffile`` can (OME-TIFF pyramids
as QuPath and bfconvert write them, stripped TIFFs), with a small tifffile reader behind the
same interface. TIFF-family slides OpenSlide opens (Aperio SVS, generic tiled TIFF) keep
OpenSlide's metadata but have their tiles decoded directly by tifffile + imagecodecs, which is
several times faster and decodes in parallel, with identical pixels (``decoder="openslide"``
turns it off). ``Slide.read(mpp, box)`` returns RGB pixels at ``mpp`` µm/px:

* the level-0 MPP comes from ``openslide.mpp-x`` / ``openslide.mpp-y`` (OME ``PhysicalSizeX/Y``
  on the tifffile path); ``mpp=`` overrides it; a slide with none, or an implausible value, is
  refused with an error naming the file and the ``--mpp`` override;
* the target downsampling factor is ``target_mpp / level0_mpp`` per axis; pixels are read from
  the coarsest pyramid level whose downsample does not exceed it on either axis (no upsampling;
  a level over only by the integer rounding of its size counts as not exceeding it, see
  :meth:`Slide.level_for`) and shrunk with INTER_AREA to the exact target size (sizes are
  target sizes, so there is no off-by-one);
* opt-in, never default: ``level_tolerance`` (a level within P % of the target, resized slightly
  up) and ``dct_scaling`` (JPEG tiles decoded at 1/2, 1/4 or 1/8 in the DCT domain);
* large regions are read in blocks by a pool of threads (OpenSlide releases the GIL) and
  shrunk block by block with :func:`tseg.runtime.wsi.resample.area_resample`, which keeps memory
  bounded and assembles to the one-shot result within one 8-bit level.

Layers (as openslide-python's ``OpenSlide`` over its ``lowlevel``): this facade over a *source*
(:mod:`tseg.runtime.wsi.base`; the kinds in :mod:`~tseg.runtime.wsi.openslide_source`,
:mod:`~tseg.runtime.wsi.tifffile_source`, :mod:`~tseg.runtime.wsi.dicom_source`, chosen by
:func:`tseg.runtime.wsi.dispatch.open_source`); the resolution rules in :mod:`~tseg.runtime.wsi.mpp`
and the level choice in :mod:`~tseg.runtime.wsi.levels`.

Sizes at a resolution are ``floor(level0_size * level0_mpp / mpp)``: the image at ``mpp`` then
lies entirely inside the scanned area, and pixel ``(x, y)`` at ``mpp`` covers level-0 pixels
``[x * f, (x + 1) * f)`` with ``f = mpp / level0_mpp``.
"""


from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tseg.runtime.errors import (ImplausibleMppError, InvalidArgumentError, MissingMppError, SlideReadError,
                                 UnsupportedSlideError)
from tseg.runtime.util.parallel import run_jobs
from tseg.runtime.wsi.brightfield import file_reason, refusal as brightfield_refusal, source_reason
from tseg.runtime.wsi.locator import as_slide, is_remote
from tseg.runtime.wsi.levels import ReadPlan, choose_level, level_allowed, plan_read, size_at_factors, target_factors
from tseg.runtime.wsi.mpp import NETWORK_MPP, OVERVIEW_MPP, UPSAMPLE_TOLERANCE, resolve_mpp
from tseg.runtime.wsi.limits import MAX_SLIDE_MM, BackendMemory, budget_for
from tseg.runtime.wsi.resample import area_resample
from tseg.runtime.wsi.base import SlideSource
from tseg.runtime.wsi.dispatch import DECODERS, open_source
from tseg.runtime.wsi.tifffile_source import DirectTiffSource, TiffFileSource

#: The public API, with the constants of the modules this one was split into (kept importable here).
log = logging.getLogger(__name__)

#: The paper's inference tile, for what ``tseg-rt info`` says a run would need.
PAPER_TILE_PX = 7680

#: Source pixels per side of one block read by the blockwise reader.
DEFAULT_BLOCK_PX = 2048


def default_reader_threads() -> int:
    """Reader threads used when none are requested: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


class Slide:
    """An open whole-slide image with a level-0 resolution in µm/px on each axis.

    Thread-safe for concurrent reads. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path | str, source: SlideSource, mpp: tuple[float, float], mpp_source: str,
                 reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX,
                 level_tolerance: float = 0.0, dct_scaling: bool = False) -> None:
        self.path = path
        self._source = source
        self.mpp_x, self.mpp_y = mpp
        self.mpp_source = mpp_source
        #: Plausible metadata that an override replaced (differing by > 1 %), else None.
        self.stored_mpp: tuple[float, float] | None = None
        #: Why the slide is not H&E brightfield, when it was opened with allow_non_brightfield; else None.
        self.non_brightfield: str | None = None
        self.reader_threads = reader_threads or default_reader_threads()
        if block_px < 64:
            raise InvalidArgumentError(f"block_px must be >= 64, got {block_px!r}")
        self.block_px = int(block_px)
        if not (isinstance(level_tolerance, (int, float)) and 0.0 <= level_tolerance <= 50.0):
            raise InvalidArgumentError(f"level_tolerance is a percentage in [0, 50], got {level_tolerance!r}")
        self.level_tolerance = float(level_tolerance)
        self.dct_scaling = bool(dct_scaling)
        for level, (w, h) in enumerate(source.level_dimensions):
            if w < 1 or h < 1:
                raise UnsupportedSlideError(path, f"level {level} claims {w} x {h} px, an empty image: the file "
                                                  "is damaged; re-export or re-scan the slide")
        w0, h0 = source.level_dimensions[0]
        self.level_downsamples = [(w0 / w, h0 / h) for (w, h) in source.level_dimensions]

    # -- geometry --
    @property
    def source(self) -> SlideSource:
        """The low-level reader of this slide (levels in their own coordinates)."""
        return self._source

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
        if getattr(self, "non_brightfield", None):
            notes.append(f"not H&E brightfield: {self.non_brightfield}; segmented because it was forced "
                         "(--allow-non-brightfield), although the model was not trained on such images")
        return notes

    @property
    def decoder(self) -> str:
        """What decodes the pixels: ``openslide``, ``tifffile`` (direct TIFF tile decoding) or, for a
        source that says, its own decoder (``wsidicom`` for DICOMweb)."""
        own = getattr(self._source, "decoder", None)
        if isinstance(own, str):
            return own
        return "tifffile" if isinstance(self._source, (DirectTiffSource, TiffFileSource)) else "openslide"

    def origin(self) -> dict[str, Any]:
        """Where the slide came from, for summaries: ``path``, ``name``, ``size_bytes``,
        ``modified`` (a source may add more, e.g. the DICOMweb server and UIDs)."""
        own = getattr(self._source, "origin", None)
        if callable(own):
            return own()
        p = Path(self.path)
        stat = p.stat()
        return {"path": str(p.resolve()), "name": p.name, "size_bytes": stat.st_size,
                "modified": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()}

    def size_mm(self) -> tuple[float, float]:
        w0, h0 = self.dimensions
        return (w0 * self.mpp_x / 1000.0, h0 * self.mpp_y / 1000.0)

    def factors(self, mpp: float) -> tuple[float, float]:
        """Target downsampling factor per axis: ``mpp / level0_mpp`` (paper, *Downsampling*)."""
        return target_factors(self.path, mpp, self.mpp)

    def size_at(self, mpp: float) -> tuple[int, int]:
        """``(width, height)`` of the whole slide at ``mpp`` µm/px."""
        return size_at_factors(self.dimensions, self.factors(mpp))

    def level_allowed(self, level: int, fx: float, fy: float) -> bool:
        """Whether ``level`` may be read for the factors ``(fx, fy)`` (see :meth:`level_for`)."""
        return level_allowed(self._source.level_dimensions, self.level_downsamples[level], level, (fx, fy),
                             self.level_tolerance)

    def level_for(self, mpp: float) -> int:
        """The coarsest level whose downsample does not exceed the target factor on either axis
        (paper, *Downsampling*: no upsampling).

        A level whose downsample exceeds the factor only through the integer rounding of its
        size counts as not exceeding it: an Aperio-like level 1 of 8000 px over a level 0 of
        32001 px has a downsample of 4.000125 but is the 4x level; read at 1 µm/px from 0.25
        µm/px it is over by one level-0 pixel across its whole extent, not an upsampling. The
        rule: ``level0_size - level_size * factor <= 1`` on each axis. With
        ``level_tolerance = P`` (opt-in), a level within P % of the factor is also allowed, and
        is then resized slightly up.
        """
        return choose_level(self._source.level_dimensions, self.level_downsamples, self.factors(mpp),
                            self.level_tolerance)

    def read_plan(self, mpp: float) -> ReadPlan:
        """The level, pixel ratio and (opt-in) DCT scale :meth:`read` uses for ``mpp``."""
        level = self.level_for(mpp)
        return plan_read(level, self.level_downsamples[level], self.factors(mpp),
                         self._source.dct_scales if self.dct_scaling else None)

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
        if plan.scale > 1:  # the decoded level is smaller (the last pixel may include padding)
            lw, lh = -(-lw // plan.scale), -(-lh // plan.scale)

        def work(block: tuple[int, int, int, int]) -> None:
            bx, by, cw, ch = block
            a_x, a_y = (x + bx) * rx, (y + by) * ry
            b_x = min((x + bx + cw) * rx, float(lw))
            b_y = min((y + by + ch) * ry, float(lh))
            sx0, sy0 = int(math.floor(a_x + 1e-9)), int(math.floor(a_y + 1e-9))
            sx1 = min(lw, max(sx0 + 1, int(math.ceil(b_x - 1e-9))))
            sy1 = min(lh, max(sy0 + 1, int(math.ceil(b_y - 1e-9))))
            try:
                if plan.scale > 1:
                    src = self._source.read_level(plan.level, sx0, sy0, sx1 - sx0, sy1 - sy0, plan.scale)
                else:
                    src = self._source.read_level(plan.level, sx0, sy0, sx1 - sx0, sy1 - sy0)
            except SlideReadError:
                raise  # already names the file, the level and the tile
            except MemoryError as exc:
                raise SlideReadError(self.path, f"reading level {plan.level} needs more memory than is free; "
                                                "process the slide on a machine with more memory") from exc
            except Exception as exc:  # OpenSlide/tifffile errors on corrupt tiles
                raise SlideReadError(self.path, f"reading level {plan.level} failed: "
                                                f"{exc or type(exc).__name__}") from exc
            out[by : by + ch, bx : bx + cw] = area_resample(
                src, (cw, ch), (rx, ry), (a_x - sx0, a_y - sy0)
            )

        run_jobs(work, blocks, max(1, min(threads or self.reader_threads, len(blocks))), "tseg-read")
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
            "decoder": self.decoder,
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


def open_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None,
               reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX,
               decoder: str = "auto", level_tolerance: float = 0.0, dct_scaling: bool = False,
               allow_non_brightfield: bool = False) -> Slide:
    """Open a whole-slide image: a file, the folder of a DICOM series, or a DICOMweb series URL
    (``https://HOST/ROOT/studies/S/series/T``, :mod:`tseg.runtime.wsi.dicomweb_source`; credentials from
    ``TSEG_DICOMWEB_CREDENTIALS`` or the other variables of :mod:`tseg.runtime.util.http`).

    ``mpp`` overrides the level-0 resolution (one value for both axes, or ``(x, y)``); when it
    differs from plausible metadata, :attr:`Slide.warnings` says so (and a warning is logged).
    ``decoder``: ``auto`` decodes TIFF-family slides (Aperio SVS, generic tiled TIFF) directly
    with tifffile + imagecodecs when their codecs are ones checked identical to OpenSlide's,
    everything else with OpenSlide; ``openslide`` forces OpenSlide (OME-TIFF is always read with
    tifffile, DICOM series through :mod:`tseg.runtime.wsi.dicom_source`). ``level_tolerance`` (percent) and
    ``dct_scaling`` are opt-in speed-ups that change the pixels slightly (see
    :meth:`Slide.level_for`, :class:`ReadPlan` and docs/performance.md).
    A slide whose metadata says it is not H&E brightfield (fluorescence, multiplex, grey:
    :mod:`tseg.runtime.wsi.brightfield`) is refused unless ``allow_non_brightfield``; forced, the
    reason stays in :attr:`Slide.warnings`.
    Raises :class:`~tseg.runtime.errors.SlideNotFoundError`,
    :class:`~tseg.runtime.errors.UnsupportedSlideError` (:class:`~tseg.runtime.errors.NonBrightfieldError`),
    :class:`~tseg.runtime.errors.MissingMppError` or
    :class:`~tseg.runtime.errors.ImplausibleMppError`, each naming the file and the fix.
    """
    p = as_slide(path)
    if decoder not in DECODERS:
        raise InvalidArgumentError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    reason = None if is_remote(p) else file_reason(Path(p))
    if reason and not allow_non_brightfield:
        raise brightfield_refusal(p, reason)
    source = open_source(p, decoder)
    reason = reason or source_reason(source)
    if reason and not allow_non_brightfield:
        source.close()
        raise brightfield_refusal(p, reason)
    if reason:
        log.warning("%s: not H&E brightfield: %s; segmenting it as forced", p, reason)
    try:
        checked, origin, stored = resolve_mpp(p, mpp, source.mpp(), source.level_dimensions[0])
    except Exception:
        source.close()
        raise
    if stored is not None:
        log.warning("%s: the given resolution %.4g x %.4g µm/px overrides the slide's plausible metadata "
                    "%.4g x %.4g µm/px", p, checked[0], checked[1], stored[0], stored[1])
    try:
        slide = Slide(p, source, checked, origin, reader_threads=reader_threads, block_px=block_px,
                      level_tolerance=level_tolerance, dct_scaling=dct_scaling)
    except Exception:
        source.close()
        raise
    slide.stored_mpp = stored
    slide.non_brightfield = reason
    return slide


def describe_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None,
                   max_slide_mm: float = MAX_SLIDE_MM, allow_non_brightfield: bool = False,
                   backend: str | BackendMemory = "cpu") -> dict[str, Any]:
    """What ``tseg-rt info`` shows: :meth:`Slide.info` with ``limits`` (the claimed size against
    ``max_slide_mm`` and the memory processing needs against the machine's, at the paper's 1 µm/px
    and 7680 px tiles with the model's memory ``backend`` (default: a model not measured, on the
    CPU), with what ``tseg-rt run`` would refuse: :mod:`tseg.runtime.wsi.limits`),
    or, for a slide whose resolution is missing or implausible, its vendor, levels and sizes in
    pixels with the problem stated. A slide that is not H&E brightfield is refused as
    :func:`open_slide` refuses it, unless ``allow_non_brightfield``."""
    p = as_slide(path)
    try:
        with open_slide(p, mpp, allow_non_brightfield=allow_non_brightfield) as slide:
            return dict(slide.info(), limits=budget_for(slide, NETWORK_MPP, PAPER_TILE_PX, max_slide_mm=max_slide_mm,
                                                        backend=backend).as_dict())
    except (MissingMppError, ImplausibleMppError) as exc:
        problem = exc
    source = open_source(p)
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
