"""Whole slides through the pipeline ``tseg-rt run`` uses: slides per hour, and where time goes.

Each slide goes through :func:`tseg.runtime.cohort.runner.process_slide` (the function every
``tseg-rt run`` worker calls: reading, background, tiles, merge, post-processing, and every
output file written to a temporary results folder and renamed into place), one at a time, as
``tseg-rt run`` without ``--workers`` does. The per-stage times are the ones the pipeline
recorded in each slide's ``summary.json``; nothing is re-run to be timed
(:mod:`tseg.runtime.bench.stages` groups them, finds the limiting stage and the advice).

Without slides, a generated one is used (:func:`generated_slide`: a synthetic H&E-like slide of
a stated size and level-0 resolution, a JPEG pyramidal TIFF with 4x levels, as most scanners
write; generated once and cached). Slides that fail are reported and left out of the figures.

For each slide the reading facts are derived from the slide itself (:func:`reading_facts`):
which pyramid level is read, how many source pixels are decoded per network pixel, and whether
a coarser level lies within a few per cent of the target (where ``--level-tolerance`` helps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tseg.runtime.bench.stages import analyse
from tseg.runtime.errors import InvalidArgumentError, TsegError

log = logging.getLogger(__name__)

#: The generated slide when none is given: 10 x 8 mm of a 0.25 µm/px (40x) scan, 2 x 2 tiles of 7680².
GENERATED_MM = (10.0, 8.0)
GENERATED_MPP = 0.25
#: ``--level-tolerance`` is suggested for a level at most this many per cent coarser than the target.
MAX_SUGGESTED_TOLERANCE = 5.0


def cache_dir() -> Path:
    """Where generated slides are kept: ``$TSEG_BENCH_CACHE`` or ``~/.cache/tseg-rt/bench``."""
    return Path(os.environ.get("TSEG_BENCH_CACHE") or Path.home() / ".cache" / "tseg-rt" / "bench")


def generated_slide(width_mm: float = GENERATED_MM[0], height_mm: float = GENERATED_MM[1],
                    mpp: float = GENERATED_MPP, cache: Path | None = None, seed: int = 2026) -> Path:
    """A synthetic slide of ``width_mm`` x ``height_mm`` at ``mpp`` µm/px, generated once into
    ``cache`` (atomically: in a temporary folder, then renamed)."""
    if not (0.05 <= width_mm <= 100 and 0.05 <= height_mm <= 100):
        raise InvalidArgumentError(f"a generated slide is 0.05-100 mm a side, got {width_mm} x {height_mm} mm")
    if not 0.1 <= mpp <= 2.0:
        raise InvalidArgumentError(f"a generated slide's level 0 is 0.1-2 µm/px, got {mpp}")
    from tseg.runtime.evaluation.synthetic import generate_slide

    cache = cache or cache_dir()
    name = f"generated-{width_mm:g}x{height_mm:g}mm-{mpp:g}mpp-seed{seed}.tiff"
    path = cache / name
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".generating-", dir=cache))
    try:
        t0 = time.perf_counter()
        log.warning("generating a %g x %g mm slide at %g µm/px for the benchmark (once; kept in %s)",
                    width_mm, height_mm, mpp, cache)
        generate_slide(tmp / name, seed=seed, width_mm=width_mm, height_mm=height_mm, mpp=mpp, n_tumours=2)
        os.replace(tmp / name, path)
        log.info("generated %s in %.0f s", path, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def reading_facts(path: Path, segmenter: Any) -> dict[str, Any]:
    """How the slide is read at the model's resolution (module docstring)."""
    from tseg.runtime.wsi.slide import open_slide

    s = segmenter.settings
    target_mpp = segmenter.contract.mpp
    with open_slide(path, s.mpp, level_tolerance=s.level_tolerance, dct_scaling=s.dct_scaling) as slide:
        plan = slide.read_plan(target_mpp)
        fx, fy = slide.factors(target_mpp)
        downsamples = slide.level_downsamples
        dx, dy = downsamples[plan.level]
        facts: dict[str, Any] = {
            "name": path.name, "level": plan.level, "level_mpp": slide.mpp_x * dx,
            "source_pixels_per_network_pixel": plan.ratio[0] * plan.ratio[1],
            "tolerance_percent": None}
        best = None
        for level, (lx, ly) in enumerate(downsamples):
            if lx * ly <= dx * dy:
                continue
            over = 100.0 * max(lx / fx, ly / fy) - 100.0  # how much coarser than the target
            if 0 < over <= MAX_SUGGESTED_TOLERANCE and (best is None or lx * ly > best[1]):
                best = (level, lx * ly, over, lx)
        if best is not None:
            level, area, over, lx = best
            facts.update(tolerance_percent=math.ceil(over * 10) / 10, tolerance_level=level,
                         tolerance_level_mpp=slide.mpp_x * lx, tolerance_fewer_pixels=area / (dx * dy))
    return facts


def warm_up(segmenter: Any, slide: Path, warm_side: int | None = None) -> bool:
    """Run one unmeasured tile of the shape the slide's first tile will have (a backend's first call
    at a shape allocates), unless it is ``warm_side``² (already run); False if the slide cannot be
    opened (it will fail, reported)."""
    from tseg.runtime.method.tiling import pad_to_divisor, plan_tiles
    from tseg.runtime.wsi.slide import open_slide

    c = segmenter.contract
    try:
        with open_slide(slide, segmenter.settings.mpp) as s:
            width, height = s.size_at(c.mpp)
    except TsegError:
        return False
    first = plan_tiles(width, height, c.tile_size, c.min_overlap).tiles[0]
    tile = pad_to_divisor(np.zeros((first.height, first.width, 3), np.uint8), c.divisor)
    if tile.shape[:2] != (warm_side, warm_side):
        segmenter.backend.infer(tile[None])
    return True


def bench_end_to_end(segmenter: Any, slides: Sequence[Path], work: Path | None = None, warm_side: int | None = None,
                     on_slide: Callable[[Path, Any], None] | None = None) -> dict[str, Any]:
    """Segment ``slides`` one at a time into a temporary results folder under ``work`` (removed
    afterwards) and analyse the recorded stage times, after :func:`warm_up` (``warm_side``: the
    side of the square tiles the backend has run already)."""
    from tseg.runtime.bench.machine import cpu_info
    from tseg.runtime.cohort.runner import process_slide
    from tseg.runtime.outputs.summary import SUMMARY
    from tseg.runtime.wsi.slide import default_reader_threads

    if not slides:
        raise InvalidArgumentError("no slides to benchmark")
    next((s for s in slides if warm_up(segmenter, Path(s), warm_side)), None)
    root = Path(tempfile.mkdtemp(prefix="tseg-bench-", dir=work))
    (root / "results").mkdir()
    per: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        for slide in slides:
            outcome = process_slide(segmenter, Path(slide), root / "results", overwrite=True)
            if on_slide:
                on_slide(Path(slide), outcome)
            if outcome.status != "done":
                failed.append({"slide": str(slide), "status": outcome.status, "error": outcome.error})
                continue
            summary = json.loads((root / "results" / outcome.name / SUMMARY).read_text(encoding="utf-8"))
            entry = {"slide": str(slide), "name": outcome.name, "wall_s": outcome.seconds,
                     "timings_s": summary["timings_s"], "tiles": summary["tiles"],
                     "size_mm": summary["slide"].get("size_mm"),
                     "size_at_model_mpp": summary["slide"].get("size_at_model_mpp")}
            try:
                entry["reading"] = reading_facts(Path(slide), segmenter)
            except TsegError as exc:  # the slide was read once already: unlikely, and not fatal here
                entry["reading"] = None
                log.warning("%s: reading facts unavailable: %s", slide, exc)
            per.append(entry)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    threads = segmenter.settings.reader_threads or default_reader_threads()
    cores = cpu_info()["usable_cores"]
    return {"per_slide": per, "failed": failed, "reader_threads": threads, "usable_cores": cores,
            "settings": {"level_tolerance_percent": segmenter.settings.level_tolerance,
                         "dct_scaling": segmenter.settings.dct_scaling},
            **analyse(per, segmenter.backend.describe(), cores, threads)}
