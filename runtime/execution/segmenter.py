"""The embedding API: ``Segmenter(engine).segment_slide(path)`` / ``.segment_image(rgb)``.

Arrays in, arrays out, no files written (see :mod:`tseg.runtime.outputs.files` for that). A
Segmenter holds one loaded backend and no other mutable state, so it is safe to call from
several threads on different slides. Errors are :class:`~tseg.runtime.errors.TsegError`
subclasses.

Per slide (paper, *Method application*): read the 5 µm/px overview and segment the background;
plan the tiles at the model's resolution (1 µm/px, 7680 px, >= 1024 px overlap); run the
tiles that hold foreground; merge; post-process at 5 µm/px; polygons in level-0 pixels.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from tseg.runtime.method.background import foreground_mask, tile_foreground_fraction
from tseg.runtime.execution.backends.base import Backend
from tseg.runtime.execution.backends import load_backend
from tseg.runtime.errors import InvalidArgumentError, SlideChangedError, SlideError
from tseg.runtime.execution.pipeline import run_tiles
from tseg.runtime.method.merge import merger_for
from tseg.runtime.method.polygons import mask_to_geojson
from tseg.runtime.method.postprocess import check_thresholds, label_regions, postprocess
from tseg.runtime.wsi.limits import MAX_SLIDE_MM, backend_memory, budget_for, check_budget
from tseg.runtime.wsi.locator import is_remote
from tseg.runtime.wsi.mpp import OVERVIEW_MPP
from tseg.runtime.wsi.slide import open_slide
from tseg.runtime.wsi.snapshot import change, snapshot
from tseg.runtime.method.tiling import plan_tiles
from tseg.runtime.util.versions import versions

log = logging.getLogger(__name__)

#: How ``overlay.png`` shows the tumour (drawn by :mod:`tseg.runtime.outputs.overlay`): a
#: translucent fill with a contour, the contour alone, or the probability as a heat map with the
#: contour. Settings of the outputs, kept here with the run's other settings so that they travel
#: (CLI, workers, the summary, resume) as the thresholds do; they never change the maps.
OVERLAY_STYLES = ("fill", "contour", "heatmap")
DEFAULT_OVERLAY_STYLE = "fill"
DEFAULT_OVERLAY_OPACITY = 0.35  # "about a third": the tissue keeps 65 % of its contrast under the fill


def check_overlay(style: Any, opacity: Any) -> None:
    """Raise :class:`InvalidArgumentError` unless ``style`` is one of :data:`OVERLAY_STYLES` and
    ``opacity`` a number in [0, 1]."""
    if style not in OVERLAY_STYLES:
        raise InvalidArgumentError(f"overlay style must be one of {', '.join(OVERLAY_STYLES)}, got {style!r}")
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0.0 <= float(opacity) <= 1.0:
        raise InvalidArgumentError(f"overlay opacity must be a number from 0 (invisible) to 1 (opaque), got {opacity!r}")


@dataclass
class Result:
    """One segmentation. Maps are at the overview resolution (5 µm/px) unless named otherwise."""

    probability: np.ndarray  # uint8 tumour probability x 255
    smoothed: np.ndarray  # uint8, after the paper's smoothing
    mask: np.ndarray  # bool tumour mask
    foreground: np.ndarray  # bool tissue (background segmentation)
    overview: np.ndarray  # RGB uint8
    geojson: dict[str, Any]  # tumour polygons; level-0 px for slides, input px for images
    summary: dict[str, Any]
    probability_full: np.ndarray | None = None  # uint8 at the model's resolution (1 µm/px)
    polygon_scale: tuple[float, float] = (1.0, 1.0)  # level-0 (or input) px per overview px

    @property
    def regions(self) -> int:
        return len(self.geojson["features"])


@dataclass(frozen=True)
class Settings:
    """Run settings; thresholds default to the model contract's (paper: 85 / 229)."""

    low: int | None = None
    high: int | None = None
    prune: bool = True
    mpp: float | tuple[float, float] | None = None
    reader_threads: int | None = None
    level_tolerance: float = 0.0  # opt-in (percent), see Slide.level_for
    dct_scaling: bool = False  # opt-in, see slide.ReadPlan
    allow_non_brightfield: bool = False  # opt-in: fluorescence/multiplex/grey slides (wsi.brightfield)
    prefetch: int = 2
    skip_background: bool = True
    keep_full_probability: bool = True
    #: Slides with a side longer than this (mm) are refused before work (wsi/limits.py).
    max_slide_mm: float = MAX_SLIDE_MM
    #: Memory a slide's processing may need, in bytes; None: what this machine has (wsi/limits.py).
    memory_bytes: int | None = None
    overlay_style: str = DEFAULT_OVERLAY_STYLE  # outputs only: see OVERLAY_STYLES
    overlay_opacity: float = DEFAULT_OVERLAY_OPACITY


def _overview_size(width: int, height: int, model_mpp: float) -> tuple[int, int]:
    f = OVERVIEW_MPP / model_mpp
    return (int(math.floor(width / f + 1e-9)), int(math.floor(height / f + 1e-9)))


def areas_mm2(mask: np.ndarray, foreground: np.ndarray, pixel_um: tuple[float, float]) -> dict[str, Any]:
    px_mm2 = pixel_um[0] * pixel_um[1] / 1e6
    tissue = float(np.count_nonzero(foreground)) * px_mm2
    tumour = float(np.count_nonzero(mask)) * px_mm2
    return {
        "tissue_area_mm2": round(tissue, 6),
        "tumour_area_mm2": round(tumour, 6),
        "tumour_fraction_of_tissue": round(tumour / tissue, 6) if tissue > 0 else None,
        "regions": label_regions(mask)[0] - 1,
    }


class Segmenter:
    """A loaded model plus settings. ``engine=None`` uses the demonstration model shipped with
    the package (with a notice that it is not a diagnostic model)."""

    def __init__(self, engine: str | os.PathLike[str] | Backend | None = None,
                 providers: str | list[Any] | None = None, device_id: int = 0, **settings: Any) -> None:
        if isinstance(engine, Backend):
            self.backend = engine
        else:
            if engine is None:
                from tseg.runtime.models import default_model_path

                engine = default_model_path()
                log.warning("No engine given: using the bundled demonstration model %s. It is NOT a "
                            "diagnostic model; pass --engine for real work.", Path(engine).name)
            self.backend = load_backend(engine, providers=providers, device_id=device_id)
        self.settings = Settings(**settings)
        self._check_settings()
        c = self.backend.contract
        log.debug("Segmenter ready: %s, tile %d, overlap %d, %.3g µm/px", self.backend.describe(),
                  c.tile_size, c.min_overlap, c.mpp)

    def _check_settings(self) -> None:
        s = self.settings
        check_thresholds(self.low, self.high)
        check_overlay(s.overlay_style, s.overlay_opacity)
        if s.prefetch < 1:
            raise InvalidArgumentError(f"prefetch must be >= 1, got {s.prefetch}")
        if s.reader_threads is not None and (not isinstance(s.reader_threads, int) or s.reader_threads < 1):
            raise InvalidArgumentError(f"reader_threads must be a positive integer, got {s.reader_threads!r}")
        if not (isinstance(s.max_slide_mm, (int, float)) and math.isfinite(s.max_slide_mm) and s.max_slide_mm > 0):
            raise InvalidArgumentError(f"max_slide_mm must be a positive number of mm, got {s.max_slide_mm!r}")
        if s.memory_bytes is not None and not (isinstance(s.memory_bytes, int) and s.memory_bytes > 0):
            raise InvalidArgumentError(f"memory_bytes must be a positive integer or None, got {s.memory_bytes!r}")
        if s.mpp is not None:
            values = [s.mpp] if isinstance(s.mpp, (int, float)) else list(s.mpp)
            if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                                    for v in values):
                raise InvalidArgumentError(f"mpp must be a positive number of µm per pixel (or x, y), got {s.mpp!r}")

    def with_settings(self, **changes: Any) -> "Segmenter":
        """A Segmenter on the same loaded model with some settings changed (per-slide resolution
        or thresholds in a batch). Cheap: the backend is shared, not reloaded; closing either
        closes the backend."""
        other = object.__new__(Segmenter)
        other.backend = self.backend
        other.settings = replace(self.settings, **changes)
        other._check_settings()
        return other

    @property
    def contract(self):  # noqa: ANN201 - ModelContract
        return self.backend.contract

    @property
    def low(self) -> int:
        return self.settings.low if self.settings.low is not None else self.contract.low_threshold

    @property
    def high(self) -> int:
        return self.settings.high if self.settings.high is not None else self.contract.high_threshold

    def _settings_dict(self) -> dict[str, Any]:
        s = self.settings
        return {"low": self.low, "high": self.high, "prune": s.prune, "mpp_override": s.mpp,
                "reader_threads": s.reader_threads, "prefetch": s.prefetch,
                "level_tolerance_percent": s.level_tolerance, "dct_scaling": s.dct_scaling,
                "allow_non_brightfield": s.allow_non_brightfield,
                "skip_background": s.skip_background, "overlay_style": s.overlay_style,
                "overlay_opacity": float(s.overlay_opacity)}

    def _tiles(self, width: int, height: int, foreground: np.ndarray,
               read: Callable[[Any], np.ndarray], on_tile: Callable[[int, bool], None] | None,
               cancel: threading.Event | None, on_plan: Callable[[int], None] | None = None):
        c = self.contract
        plan = plan_tiles(width, height, c.tile_size, c.min_overlap)
        if on_plan:
            on_plan(len(plan))
        if self.settings.skip_background:
            run = [tile_foreground_fraction(foreground, t, (width, height)) > 0 for t in plan]
        else:
            run = [True] * len(plan)
        return run_tiles(plan, read, self.backend, run, self.settings.prefetch, on_tile, cancel,
                         merger=merger_for(plan.tiles, plan.height, plan.width))

    def segment_slide(self, path: str | os.PathLike[str], on_tile: Callable[[int, bool], None] | None = None,
                      cancel: threading.Event | None = None,
                      on_plan: Callable[[int], None] | None = None) -> Result:
        """Segment a whole-slide image: a file, a DICOM series folder or a DICOMweb series URL.

        Before any pixel is read, a slide whose claimed size is implausible or whose processing
        would need more memory than the machine has is refused (:mod:`tseg.runtime.wsi.limits`);
        a slide whose files change while it is read fails with
        :class:`~tseg.runtime.errors.SlideChangedError` (:mod:`tseg.runtime.wsi.snapshot`; a
        DICOMweb series does not change under its UID)."""
        before = None if is_remote(path) else snapshot(path)
        try:
            return self._segment_slide(path, before, on_tile, cancel, on_plan)
        except SlideError as exc:
            what = None if isinstance(exc, SlideChangedError) or before is None else change(path, before)
            if what:
                raise SlideChangedError(path, f"the file changed while it was read ({what}); nothing was kept. Run "
                                              "it again once the file is complete") from exc
            raise

    def _segment_slide(self, path: str | os.PathLike[str], before: Any,
                       on_tile: Callable[[int, bool], None] | None, cancel: threading.Event | None,
                       on_plan: Callable[[int], None] | None) -> Result:
        c = self.contract
        timings: dict[str, float] = {}
        t_start = t0 = time.perf_counter()
        with open_slide(path, self.settings.mpp, reader_threads=self.settings.reader_threads,
                        level_tolerance=self.settings.level_tolerance,
                        dct_scaling=self.settings.dct_scaling,
                        allow_non_brightfield=self.settings.allow_non_brightfield) as slide:
            check_budget(slide.path, budget_for(slide, c.mpp, c.tile_size, self.settings.prefetch + 2,
                                                self.settings.max_slide_mm, self.settings.memory_bytes,
                                                backend_memory(self.backend)))
            timings["open_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            overview = slide.overview()
            timings["overview_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            foreground = foreground_mask(overview)
            timings["background_s"] = time.perf_counter() - t0
            if not foreground.any():
                log.warning("%s: no tissue found by the background segmentation; no tile will be run", slide.path)
            width, height = slide.size_at(c.mpp)
            prob_full, stats = self._tiles(width, height, foreground, lambda t: slide.read(c.mpp, t.box),
                                           on_tile, cancel, on_plan)
            what = change(path, before) if before is not None else None
            if what:  # the pixels may mix two versions of the file
                raise SlideChangedError(path, f"the file changed while it was read ({what}); nothing was kept. Run "
                                              "it again once the file is complete")
            t0 = time.perf_counter()
            ow, oh = overview.shape[1], overview.shape[0]
            post = postprocess(prob_full, (ow, oh), foreground, self.low, self.high, self.settings.prune)
            timings["postprocess_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            scale = slide.factors(OVERVIEW_MPP)
            geojson = mask_to_geojson(post.mask, scale)
            timings["polygons_s"] = time.perf_counter() - t0
            slide_info = {
                **slide.origin(),
                "vendor": slide.vendor,
                "dimensions_level0": list(slide.dimensions),
                "mpp_level0": list(slide.mpp),
                "mpp_source": slide.mpp_source,
                "size_mm": [round(v, 4) for v in slide.size_mm()],
                "size_at_model_mpp": [width, height],
                "size_at_overview_mpp": [ow, oh],
                "colour_correction": slide.colour_correction,
                "decoder": slide.decoder,
                "level_read_at_model_mpp": slide.read_plan(c.mpp).level,
                "dct_scale_at_model_mpp": slide.read_plan(c.mpp).scale,
            }
            warnings = slide.warnings
        timings.update({k: v for k, v in stats.as_dict().items() if k.endswith("_s")})
        timings["total_s"] = time.perf_counter() - t_start
        summary = self._summary(slide_info, post.mask, foreground, stats, timings)
        summary["warnings"] = warnings
        return Result(post.probability, post.smoothed, post.mask, foreground, overview, geojson, summary,
                      prob_full if self.settings.keep_full_probability else None, scale)

    def segment_image(self, rgb: np.ndarray, foreground: np.ndarray | None = None,
                      on_tile: Callable[[int, bool], None] | None = None,
                      cancel: threading.Event | None = None) -> Result:
        """Segment an RGB uint8 region already at the model's resolution (1 µm/px).

        ``foreground`` (optional) is a boolean tissue mask at the overview resolution
        (5 µm/px, i.e. the image's size / 5) or at the image's own size; by default it is
        computed with the paper's background segmentation. Polygons are in input pixels.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InvalidArgumentError(f"segment_image takes an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
        c = self.contract
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        height, width = rgb.shape[:2]
        ow, oh = _overview_size(width, height, c.mpp)
        if ow < 1 or oh < 1:
            raise InvalidArgumentError(
                f"image of {width} x {height} px is smaller than one {OVERVIEW_MPP} µm/px overview pixel")
        overview = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
        if foreground is None:
            foreground = foreground_mask(overview)
        else:
            foreground = np.asarray(foreground, dtype=bool)
            if foreground.shape == (height, width):
                foreground = cv2.resize(foreground.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST) > 0
            elif foreground.shape != (oh, ow):
                raise InvalidArgumentError(
                    f"foreground must be {(oh, ow)} (overview) or {(height, width)} (image), got {foreground.shape}")
        timings["background_s"] = time.perf_counter() - t_start
        prob_full, stats = self._tiles(width, height, foreground,
                                       lambda t: np.ascontiguousarray(rgb[t.y : t.y_end, t.x : t.x_end]),
                                       on_tile, cancel)
        t0 = time.perf_counter()
        post = postprocess(prob_full, (ow, oh), foreground, self.low, self.high, self.settings.prune)
        timings["postprocess_s"] = time.perf_counter() - t0
        scale = (OVERVIEW_MPP / c.mpp, OVERVIEW_MPP / c.mpp)
        geojson = mask_to_geojson(post.mask, scale)
        timings.update({k: v for k, v in stats.as_dict().items() if k.endswith("_s")})
        timings["total_s"] = time.perf_counter() - t_start
        info = {"image_size": [width, height], "mpp": c.mpp, "size_at_overview_mpp": [ow, oh]}
        summary = self._summary(info, post.mask, foreground, stats, timings)
        return Result(post.probability, post.smoothed, post.mask, foreground, overview, geojson, summary,
                      prob_full if self.settings.keep_full_probability else None, scale)

    def _summary(self, source: dict[str, Any], mask: np.ndarray, foreground: np.ndarray, stats: Any,
                 timings: dict[str, float]) -> dict[str, Any]:
        tiles = {k: v for k, v in stats.as_dict().items() if not k.endswith("_s")}
        return {
            "slide": source,
            "areas": areas_mm2(mask, foreground, (OVERVIEW_MPP, OVERVIEW_MPP)),
            "tiles": tiles,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "model": {"contract": self.contract.to_dict(), "backend": self.backend.describe()},
            "settings": self._settings_dict(),
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(),
            "warnings": [],
        }

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
