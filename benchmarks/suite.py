"""The benchmark suite: per-stage throughput against naive baselines measured in the same run.

    python -m benchmarks [--quick] [--json results.json]
    python -m benchmarks --gpu --engine model.plan [--json gpu.json]

On a generated slide (:mod:`tseg.runtime.evaluation.synthetic`): reading at 1 µm/px (blockwise parallel
reader vs one ``read_region`` + ``cv2.resize``), background segmentation, merging (cell merger
vs a full-array merge), post-processing (ours vs the steps written plainly with scikit-image and
numpy, as the reference implementation did), ONNX Runtime inference with the bundled model, and
the whole pipeline end to end, extrapolated to slides/hour for a 20 x 15 mm tissue area. Each
line gives megapixels/s (and tiles/s where tiles are the unit), the baseline's figure and the
ratio, and peak memory; then the same work side by side with the peers (:mod:`benchmarks.peers`:
MONAI, TIAToolbox, plain OpenSlide) and, in full mode, whether the CPU feeds a GPU
(:mod:`benchmarks.gpu_feed`) and the opt-in reading speed-ups on real slides
(:mod:`benchmarks.read_options`). ``--gpu`` runs the installed ``tseg-rt bench`` on an engine instead
(:func:`run_gpu`) with a generated 20 x 15 mm slide. Figures are measurements of this machine in this
run, nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

from benchmarks.common import cached_slide, in_fresh_process, peak_rss_mb, write_json

TISSUE_AREA_MM2 = 20.0 * 15.0


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def traced_peak_mb(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak traced allocation in MB, result); numpy allocations are traced."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 1e6, value


# --- naive baselines -----------------------------------------------------------------------------


def plain_foreground(rgb: np.ndarray) -> np.ndarray:
    """The background segmentation written plainly with scikit-image (as the paper describes)."""
    import cv2
    from skimage import morphology

    edges = cv2.Canny(rgb, 10, 50, apertureSize=3) > 0
    kernel = np.ones((9, 9), np.uint8)
    m = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    m = plain_fill_holes(m)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
    return morphology.remove_small_objects(m, max_size=1_599)


def plain_fill_holes(mask: np.ndarray) -> np.ndarray:
    """scikit-image's ``remove_small_holes`` (< 10,000 px), minus what it fills at the image
    border: tseg-rt's holes never touch the border (runtime/method/background.py), so the baseline
    undoes those fills with ``clear_border`` to keep computing the same thing."""
    from skimage import measure, morphology, segmentation

    filled = morphology.remove_small_holes(mask, max_size=9_999)
    added = measure.label(filled & ~mask, connectivity=1)
    return mask | (segmentation.clear_border(added) > 0)


def plain_postprocess(prob: np.ndarray, foreground: np.ndarray, low: int = 85, high: int = 229) -> np.ndarray:
    """Steps 2-5 written plainly: skimage hysteresis, a percentile per region, skimage cleaning."""
    import math

    import cv2
    from scipy import ndimage
    from skimage import filters

    h, w = prob.shape
    f = max(0.2, math.sqrt(1e6 / (h * w)))
    small = cv2.resize(prob, (math.floor(w * f), math.floor(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    small = cv2.GaussianBlur(cv2.medianBlur(small, 9), (5, 5), 0)
    smoothed = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if f < 1 else cv2.INTER_AREA)
    mask = filters.apply_hysteresis_threshold(smoothed, low, high)
    labels, n = ndimage.label(mask)
    keep = np.zeros(n + 1, bool)
    for k in range(1, n + 1):
        keep[k] = np.percentile(smoothed[labels == k], 95) > high
    mask = keep[labels] & foreground
    return plain_foreground_clean(mask)


def plain_foreground_clean(mask: np.ndarray) -> np.ndarray:
    import cv2
    from skimage import morphology

    kernel = np.ones((9, 9), np.uint8)
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    m = plain_fill_holes(m)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
    return morphology.remove_small_objects(m, max_size=1_599)


# --- stages --------------------------------------------------------------------------------------


def bench_reading(path: str, tile: int) -> dict[str, Any]:
    from benchmarks.read_tile import _blockwise, _one_shot
    from tseg.runtime.wsi.slide import default_reader_threads

    one = in_fresh_process(_one_shot, path, tile)
    block = in_fresh_process(_blockwise, path, tile, default_reader_threads())
    mp = tile * tile / 1e6
    return {"tile_px": tile, "tiles_per_s": 1 / block["wall_s"], "megapixels_per_s": mp / block["wall_s"],
            "baseline_megapixels_per_s": mp / one["wall_s"], "speedup_vs_baseline": one["wall_s"] / block["wall_s"],
            "peak_extra_mb": block["peak_extra_mb"], "baseline_peak_extra_mb": one["peak_extra_mb"],
            "baseline": "one read_region + cv2.resize (fresh process each)"}


def bench_background(overview: np.ndarray) -> dict[str, Any]:
    from tseg.runtime.method.background import foreground_mask

    ours_s, ours = timed(lambda: foreground_mask(overview), 3)
    base_s, base = timed(lambda: plain_foreground(overview), 3)
    mp = overview.shape[0] * overview.shape[1] / 1e6
    return {"image_px": list(overview.shape[:2]), "megapixels_per_s": mp / ours_s,
            "baseline_megapixels_per_s": mp / base_s, "speedup_vs_baseline": base_s / ours_s,
            "identical_to_baseline": bool(np.array_equal(ours, base)),
            "baseline": "scikit-image remove_small_holes (border fills undone)/remove_small_objects"}


def bench_merge(width: int, height: int, tile: int, overlap: int) -> dict[str, Any]:
    from tseg.runtime.method.merge import merge_tiles, merge_tiles_reference
    from tseg.runtime.method.tiling import plan_tiles

    plan = plan_tiles(width, height, tile, overlap)
    rng = np.random.default_rng(0)
    outputs = [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in plan]
    pairs = list(zip(plan.tiles, outputs))
    ours_s, ours_mb, a = traced_peak_mb(lambda: merge_tiles(height, width, pairs))
    base_s, base_mb, b = traced_peak_mb(lambda: merge_tiles_reference(height, width, pairs))
    mp = width * height / 1e6
    return {"image_px": [height, width], "tiles": len(plan), "megapixels_per_s": mp / ours_s,
            "baseline_megapixels_per_s": mp / base_s, "speedup_vs_baseline": base_s / ours_s,
            "peak_traced_mb": ours_mb, "baseline_peak_traced_mb": base_mb, "memory_ratio": ours_mb / base_mb,
            "identical_fraction_to_baseline": float(np.mean(a == b)),
            "max_level_difference_to_baseline": int(np.abs(a.astype(np.int16) - b).max()),
            "baseline": "full-array float64 weights and sum"}


def bench_postprocess(size: tuple[int, int]) -> dict[str, Any]:
    from tseg.runtime.method.postprocess import segment_probability

    h, w = size
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(1)
    prob = np.zeros((h, w), np.float32)
    for _ in range(40):
        cy, cx, r, v = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120), rng.uniform(100, 255)
        prob = np.maximum(prob, v * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    prob = np.clip(prob + rng.normal(0, 8, prob.shape), 0, 255).astype(np.uint8)
    fg = np.ones((h, w), bool)
    fg[:, : w // 10] = False
    ours_s, ours = timed(lambda: segment_probability(prob, fg), 2)
    base_s, base = timed(lambda: plain_postprocess(prob, fg), 1)
    mp = h * w / 1e6
    return {"image_px": [h, w], "megapixels_per_s": mp / ours_s, "baseline_megapixels_per_s": mp / base_s,
            "speedup_vs_baseline": base_s / ours_s, "identical_to_baseline": bool(np.array_equal(ours, base)),
            "baseline": "scikit-image hysteresis + np.percentile per region + scikit-image cleaning"}


def bench_inference(tile: int, repeats: int) -> dict[str, Any]:
    from tseg.runtime.execution.backends import load_backend
    from tseg.runtime.models import default_model_path

    backend = load_backend(default_model_path(), providers="cpu")
    x = np.random.default_rng(0).integers(0, 256, (1, tile, tile, 3), dtype=np.uint8)
    backend.infer(x)  # first run at a shape plans its memory
    seconds, _ = timed(lambda: backend.infer(x), repeats)
    return {"tile_px": tile, "tiles_per_s": 1 / seconds, "seconds_per_tile": seconds,
            "megapixels_per_s": tile * tile / 1e6 / seconds, "providers": backend.describe()["providers"],
            "model": "bundled demonstration model", "threads": os.cpu_count()}


def bench_end_to_end(path: str, engine: str | None = None, providers: str = "cpu") -> dict[str, Any]:
    from tseg.runtime.execution.segmenter import Segmenter

    segmenter = Segmenter(engine, providers=providers, keep_full_probability=False)
    t0 = time.perf_counter()
    result = segmenter.segment_slide(path)
    wall = time.perf_counter() - t0
    tissue = result.summary["areas"]["tissue_area_mm2"]
    per_mm2 = wall / max(tissue, 1e-9)
    tiles = result.summary["tiles"]
    return {"slide_s": wall, "tissue_mm2": tissue, "tiles_run": tiles["tiles_run"],
            "tiles_skipped_background": tiles["tiles_skipped_background"],
            "tiles_per_s": tiles["tiles_run"] / wall, "stage_s": result.summary["timings_s"],
            "seconds_per_tissue_mm2": per_mm2,
            "slides_per_hour_20x15mm_extrapolated": 3600 / (per_mm2 * TISSUE_AREA_MM2),
            "note": "extrapolated linearly from this slide's time per mm² of tissue"}


def run_cpu(quick: bool) -> dict[str, Any]:
    size_mm = (3.0, 2.5) if quick else (10.0, 8.0)
    mpp = 0.5 if quick else 0.25
    slide = str(cached_slide("suite", seed=21, width_mm=size_mm[0], height_mm=size_mm[1], mpp=mpp,
                             n_sections=2, n_tumours=3))
    read_slide = str(cached_slide("read", seed=3, width_mm=2.2 if quick else 7.8, height_mm=2.2 if quick else 7.8,
                                  mpp=0.25, n_tumours=1, level_factor=8))
    from tseg.runtime.wsi.slide import open_slide

    with open_slide(slide) as s:
        overview = s.overview()
    results: dict[str, Any] = {"benchmark": "suite", "mode": "quick" if quick else "full",
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "python": platform.python_version()},
                               "slide": {"path": slide, "size_mm": size_mm, "mpp": mpp}}
    # 3840 px in full mode: the one-shot baseline of a 7680 px tile needs ~11 GB, more than a
    # shared 24 GB machine can spare (benchmarks/read_tile.py still measures 7680 px on request).
    results["reading_1mpp"] = bench_reading(read_slide, 1024 if quick else 3840)
    results["background_5mpp"] = bench_background(overview)
    results["merge"] = bench_merge(*((3000, 2000, 1024, 128) if quick else (16000, 12000, 7680, 1024)))
    results["postprocess_5mpp"] = bench_postprocess((800, 1000) if quick else (3000, 4000))
    results["inference_onnxruntime_cpu"] = bench_inference(512 if quick else 7680, 2 if quick else 2)
    results["end_to_end_cpu"] = bench_end_to_end(slide)
    results["peak_rss_mb"] = peak_rss_mb()
    import tempfile

    from benchmarks import gpu_feed, peers, read_options

    with tempfile.TemporaryDirectory() as tmp:
        results["peers"] = peers.run(quick, tmp)
    if not quick:
        results["gpu_feed"] = gpu_feed.main(["--json", ""])
        results["read_options"] = read_options.main(["--json", ""])
    return results


def run_gpu(engine: str, quick: bool) -> dict[str, Any]:
    """``tseg-rt bench`` (installed: :mod:`tseg.runtime.bench`) on a GPU engine, with the suite's slide:
    the engine alone (s/tile, streamed s/tile, TFLOP/s from the graph, memory, copy rates), then the
    slide end to end (slides/hour, stage shares, backend busy, limiting stage and advice)."""
    from tseg.runtime.bench.engine import EngineSettings
    from tseg.runtime.bench.run import run_bench
    from tseg.runtime.execution.cuda import device_count

    if device_count() == 0:
        raise SystemExit("--gpu needs a CUDA GPU (cudaGetDeviceCount reports none)")
    slide = cached_slide("gpu", seed=22, width_mm=20.0 if not quick else 8.0, height_mm=15.0 if not quick else 8.0,
                         mpp=0.25, n_sections=2, n_tumours=3)
    result = run_bench(engine, [slide], engine=EngineSettings(tiles=4 if quick else 12))
    result["benchmark"] = "suite-gpu"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--gpu", action="store_true", help="measure a TensorRT engine (needs --engine)")
    parser.add_argument("--engine", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.gpu:
        if not args.engine:
            raise SystemExit("--gpu needs --engine model.plan")
        result = run_gpu(args.engine, args.quick)
    else:
        result = run_cpu(args.quick)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
