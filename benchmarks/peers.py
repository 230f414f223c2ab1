"""Same work, side by side: tseg-rt against the libraries users would pick instead.

Every comparison runs in the same invocation, each method in a fresh process (so its peak
memory is its own), with ``repeats`` runs per method: min and median seconds and the peak extra
RSS are reported, and where the methods compute the same thing their agreement with tseg-rt.

* merge: a ``W x H`` map from a full grid of tiles (7680 px, overlap 1024 in full mode) with
  the paper's weights (tseg-rt), against MONAI's ``AvgMerger`` (plain averaging; the speed to
  beat) and the float64 full-array reference;
* reading one tile at 1 µm/px: from a 0.25 µm/px level 0, the same slide as 0.5, 0.499 and
  0.2527 µm/px (``mpp`` override), an Aperio-like pyramid (level 0 of 16001 px, level 1 of
  4000 px) and a small real slide (CMU-1 small region), against TIAToolbox (its tifffile and
  OpenSlide readers) and plain OpenSlide ``read_region`` + ``cv2.resize(INTER_AREA)``;
* the JPEG decode limit: the same tiles decoded by imagecodecs (libjpeg-turbo) in a tight loop
  at 1 and 2 threads, and the reader's source-pixel rate as a fraction of it, with where the
  rest of the time goes.

Peers are optional (``pip install -e '.[bench]'``; TIAToolbox with ``--no-deps``, see
pyproject.toml): a comparison whose peer is not installed is skipped with a line saying so.
The machine is shared: quote ratios measured in the same run, not absolute seconds.

    python -m benchmarks.peers [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from typing import Any, Callable

import numpy as np

from benchmarks.common import cached_slide, in_fresh_process, peak_rss_mb, rss_mb, shared_slide, write_json

#: Real slides from ../shared/data when present.
CMU = "cmu-1-small-region.svs"


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _repeat(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return times, value


def _summary(times: list[float], base_mb: float, **extra: Any) -> dict[str, Any]:
    return {"min_s": min(times), "median_s": statistics.median(times), "repeats": len(times),
            "peak_extra_mb": peak_rss_mb() - base_mb, **extra}


# --- merge --------------------------------------------------------------------------------------


def _tile_outputs(width: int, height: int, tile: int, overlap: int):
    from tseg.runtime.method.tiling import plan_tiles

    plan = plan_tiles(width, height, tile, overlap)
    rng = np.random.default_rng(0)
    return plan, [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in plan]


def _merge_worker(method: str, width: int, height: int, tile: int, overlap: int, repeats: int) -> dict:
    plan, outputs = _tile_outputs(width, height, tile, overlap)
    pairs = list(zip(plan.tiles, outputs))
    base = rss_mb()
    if method in ("tseg", "tseg-1-thread"):
        from tseg.runtime.method.merge import merge_tiles

        threads = 1 if method == "tseg-1-thread" else None
        times, out = _repeat(lambda: merge_tiles(height, width, pairs, threads=threads), repeats)
    elif method == "tseg-cells-float64":  # the merger before issue 13: per-cell float64 weights
        from tseg.runtime.method.merge import CellMerger

        def cells() -> np.ndarray:
            merger = CellMerger(plan.tiles, height, width)
            for i, g in enumerate(outputs):
                merger.aggregate(i, g)
            return merger.finalize()

        times, out = _repeat(cells, repeats)
    elif method == "reference-float64":
        from tseg.runtime.method.merge import merge_tiles_reference

        times, out = _repeat(lambda: merge_tiles_reference(height, width, pairs), repeats)
    elif method == "monai-avgmerger":
        import torch
        from monai.inferers import AvgMerger

        tensors = [torch.from_numpy(g)[None, None] for g in outputs]

        def monai() -> np.ndarray:
            merger = AvgMerger(merged_shape=(1, 1, height, width), value_dtype=torch.float32,
                               count_dtype=torch.uint8)
            for t, g in zip(plan.tiles, tensors):
                merger.aggregate(g, (t.y, t.x))
            return merger.finalize()[0, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()

        times, out = _repeat(monai, repeats)
    else:
        raise ValueError(method)
    result = _summary(times, base, tiles=len(plan))
    if method != "reference-float64" and width * height <= 50e6:  # the float64 reference needs ~25 B/px
        from tseg.runtime.method.merge import merge_tiles_reference

        ref = merge_tiles_reference(height, width, pairs)
        diff = np.abs(out.astype(np.int16) - ref)
        result["identical_to_float64_fraction"] = float(1 - np.count_nonzero(diff) / diff.size)
        result["max_level_difference"] = int(diff.max())
    return result


def bench_merge(width: int, height: int, tile: int, overlap: int, repeats: int) -> dict[str, Any]:
    heavy = width * height > 50e6
    methods = ["tseg", "tseg-1-thread", "tseg-cells-float64"] + ([] if heavy else ["reference-float64"])
    if available("monai") and available("torch"):
        methods.append("monai-avgmerger")
    out: dict[str, Any] = {"image_px": [height, width], "tile": tile, "overlap": overlap}
    for m in methods:
        out[m] = in_fresh_process(_merge_worker, m, width, height, tile, overlap,
                                  1 if m == "reference-float64" else repeats)
    if "monai-avgmerger" not in out:
        out["monai-avgmerger"] = {"skipped": "MONAI is not installed (pip install -e '.[bench]')"}
    else:
        out["speedup_vs_monai"] = out["monai-avgmerger"]["min_s"] / out["tseg"]["min_s"]
        out["memory_ratio_vs_monai"] = out["tseg"]["peak_extra_mb"] / max(out["monai-avgmerger"]["peak_extra_mb"], 1e-9)
    out["speedup_vs_cells_float64"] = out["tseg-cells-float64"]["min_s"] / out["tseg"]["min_s"]
    out["memory_ratio_vs_cells_float64"] = out["tseg"]["peak_extra_mb"] / max(out["tseg-cells-float64"]["peak_extra_mb"], 1e-9)
    if heavy:
        out["reference-float64"] = {"skipped": "two full float64 arrays: too much memory at this size; "
                                               "agreement is tested in tests/runtime/method/test_merge.py"}
    else:
        out["speedup_vs_reference"] = out["reference-float64"]["min_s"] / out["tseg"]["min_s"]
    out["tiatoolbox"] = {"skipped": "TIAToolbox 2.x merges inside its engine through dask row and column "
                                    "chunks; it has no stand-alone merge of a given tile grid to time"}
    return out


# --- resampling ---------------------------------------------------------------------------------


def bench_resample(repeats: int) -> dict[str, Any]:
    """One 2048² block at the real-scanner ratios: the exact-geometry resampler against
    ``cv2.resize(INTER_AREA)`` (whole-image geometry, the speed to reach) and the float64
    reference (agreement), one thread each."""
    import cv2

    from tseg.runtime.wsi.resample import area_resample, area_resample_reference

    rng = np.random.default_rng(0)
    src = cv2.resize(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (2048, 2048),
                     interpolation=cv2.INTER_LINEAR)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    out: dict[str, Any] = {"block_px": 2048}
    try:
        for name, mpp in (("0.499", 0.499), ("0.2527", 0.2527), ("0.25", 0.25)):
            r = 1.0 / mpp
            size = (int((2048 - 0.3) / r), int((2048 - 0.7) / r))
            offset = (0.3, 0.7) if name != "0.25" else (0.0, 0.0)
            src_used = src if name != "0.25" else src[: size[1] * 4, : size[0] * 4]
            ours_t, ours = _repeat(lambda: area_resample(src_used, size, (r, r), offset), repeats + 1)
            cv_t, _ = _repeat(lambda: cv2.resize(src_used, size, interpolation=cv2.INTER_AREA), repeats + 1)
            exact = area_resample_reference(src_used, size, (r, r), offset)
            diff = np.abs(ours.astype(np.int16) - exact)
            out[f"level0_{name}mpp_to_1mpp"] = {
                "ratio": r, "ours_ms": 1e3 * min(ours_t[1:]), "cv2_inter_area_ms": 1e3 * min(cv_t[1:]),
                "ours_over_cv2": min(ours_t[1:]) / min(cv_t[1:]),
                "vs_exact_max_levels": int(diff.max()), "vs_exact_identical_fraction": float(np.mean(diff == 0)),
            }
    finally:
        cv2.setNumThreads(threads)
    return out


# --- reading ------------------------------------------------------------------------------------


def _read_worker(method: str, path: str, mpp: float | None, tile: int, repeats: int, threads: int | None) -> dict:
    import cv2

    from tseg.runtime.wsi.slide import open_slide

    with open_slide(path, mpp=mpp) as s:
        w1, h1 = s.size_at(1.0)
        size = (min(tile, w1), min(tile, h1))
        box = ((w1 - size[0]) // 2, (h1 - size[1]) // 2, size[0], size[1])
        fx, fy = s.factors(1.0)
        level = s.level_for(1.0)
        source_mp = size[0] * fx * size[1] * fy / s.level_downsamples[level][0] / s.level_downsamples[level][1] / 1e6
    base = rss_mb()
    extra: dict[str, Any] = {"tile_px": list(size), "level": level, "source_megapixels": source_mp}
    if method in ("tseg", "tseg-openslide"):
        slide = open_slide(path, mpp=mpp, reader_threads=threads,
                           decoder="openslide" if method == "tseg-openslide" else "auto")
        times, img = _repeat(lambda: slide.read(1.0, box), repeats)
        extra["decoder"] = slide.decoder
        slide.close()
    elif method == "openslide-cv2":
        import openslide

        osr = openslide.OpenSlide(path)
        ds = osr.level_downsamples[level]
        src = (int(round(size[0] * fx / ds)), int(round(size[1] * fy / ds)))

        def one_shot() -> np.ndarray:
            region = np.asarray(osr.read_region((int(box[0] * fx), int(box[1] * fy)), level, src))
            return cv2.resize(region[..., :3], size, interpolation=cv2.INTER_AREA)

        times, img = _repeat(one_shot, repeats)
        osr.close()
    elif method.startswith("tiatoolbox"):
        from tiatoolbox.wsicore.wsireader import OpenSlideWSIReader, TIFFWSIReader

        cls = TIFFWSIReader if method == "tiatoolbox-tifffile" else OpenSlideWSIReader
        reader = cls(path, mpp=(mpp, mpp) if mpp else None)
        location = (int(box[0] * fx), int(box[1] * fy))
        times, img = _repeat(lambda: reader.read_rect(location, size, resolution=1.0, units="mpp"), repeats)
        img = np.asarray(img)[..., :3]
        try:
            read_level, _ = reader._find_optimal_level_and_downsample(1.0, "mpp")
            extra["tiatoolbox_level"] = int(read_level)
        except Exception:
            pass
    else:
        raise ValueError(method)
    result = _summary(times, base, **extra)
    result["megapixels_per_s"] = size[0] * size[1] / 1e6 / result["min_s"]
    result["source_megapixels_per_s"] = source_mp / result["min_s"]
    np.save(os.path.join(os.environ["TSEG_PEERS_TMP"], f"{method}.npy"), np.asarray(img))
    return result


READ_METHODS = ["tseg", "tseg-openslide", "openslide-cv2", "tiatoolbox-tifffile", "tiatoolbox-openslide"]


def bench_read_case(name: str, path: str, mpp: float | None, tile: int, repeats: int, tmp: str,
                    methods: list[str] | None = None, slow_repeats: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"case": name, "path": path, "mpp_override": mpp}
    os.environ["TSEG_PEERS_TMP"] = tmp
    for m in methods or READ_METHODS:
        if m.startswith("tiatoolbox") and not available("tiatoolbox"):
            out[m] = {"skipped": "TIAToolbox is not installed (pip install --no-deps tiatoolbox, see pyproject.toml)"}
            continue
        if m == "tiatoolbox-tifffile" and path.endswith(".svs"):
            out[m] = {"skipped": "TIAToolbox opens SVS files with its OpenSlide reader"}
            continue
        try:
            out[m] = in_fresh_process(_read_worker, m, path, mpp, tile,
                                      repeats if m.startswith("tseg") else slow_repeats, None)
        except RuntimeError as exc:
            if "Unsupported TIFF WSI format" in str(exc):
                out[m] = {"skipped": "TIAToolbox's tifffile reader refuses this generic TIFF "
                                     "(ValueError: Unsupported TIFF WSI format)"}
            else:
                out[m] = {"error": str(exc)[:300]}
    ours = np.load(os.path.join(tmp, "tseg.npy"))
    for m in methods or READ_METHODS:
        f = os.path.join(tmp, f"{m}.npy")
        if m != "tseg" and "min_s" in out.get(m, {}) and os.path.exists(f):
            other = np.load(f)
            if other.shape == ours.shape:
                d = np.abs(other.astype(np.int16) - ours)
                out[m]["vs_tseg_mean_abs_levels"] = float(d.mean())
                out[m]["vs_tseg_max_abs_levels"] = int(d.max())
                out[m]["time_ratio_vs_tseg"] = out[m]["min_s"] / out["tseg"]["min_s"]
            os.remove(f)
    os.remove(os.path.join(tmp, "tseg.npy"))
    return out


# --- the decode limit ----------------------------------------------------------------------------


def _decode_limit_worker(path: str, tile: int, threads_list: list[int], seconds: float) -> dict:
    """The JPEG tiles under one tile read at 1 µm/px: imagecodecs in a tight loop against the
    reader (decode + assembly + resampling), per thread count, and where the reader's time goes."""
    from concurrent.futures import ThreadPoolExecutor

    import imagecodecs
    import openslide
    from tifffile.tifffile import jpeg_decode_colorspace

    from tseg.runtime.wsi.slide import open_slide
    from tseg.runtime.wsi.base import rgba_to_rgb

    s = open_slide(path)
    w1, h1 = s.size_at(1.0)
    size = min(tile, w1, h1)
    box = ((w1 - size) // 2, (h1 - size) // 2, size, size)
    fx, fy = s.factors(1.0)
    assert s.level_for(1.0) == 0 and s.decoder == "tifffile"
    level = s.source.tiff_levels[0]
    page = level.page
    sx0, sy0 = int(box[0] * fx), int(box[1] * fy)
    sx1, sy1 = int(np.ceil((box[0] + size) * fx)), int(np.ceil((box[1] + size) * fy))
    tw, th = level.chunk_w, level.chunk_h
    indices = [r * level.across + c for r in range(sy0 // th, (sy1 - 1) // th + 1)
               for c in range(sx0 // tw, (sx1 - 1) // tw + 1)]
    chunks = [level._raw(i) for i in indices]
    colorspace, outcolorspace = jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples,
                                                       page.is_jfif)
    source_mp = (sx1 - sx0) * (sy1 - sy0) / 1e6

    def decode_all(part: list[bytes]) -> int:
        scratch = np.empty((th, tw, 3), np.uint8)
        for data in part:
            imagecodecs.jpeg_decode(data, bitspersample=8, tables=page.jpegtables, colorspace=colorspace,
                                    outcolorspace=outcolorspace, shape=(th, tw), out=scratch)
        return len(part)

    out: dict[str, Any] = {"tiles": len(chunks), "tile_px": [tw, th], "compression": int(page.compression),
                           "source_region_px": [sx1 - sx0, sy1 - sy0], "read_tile_px": size}
    s.read(1.0, box)  # warm the file cache and the allocator
    for n in threads_list:
        parts = [chunks[k::n] for k in range(n)]
        t0, done = time.perf_counter(), 0
        with ThreadPoolExecutor(n) as pool:
            while time.perf_counter() - t0 < seconds:
                done += sum(pool.map(decode_all, parts))
        limit = done * tw * th / 1e6 / (time.perf_counter() - t0)
        best = float("inf")
        for _ in range(2):
            level._cache.__init__()  # every read starts with no decoded tile
            t0 = time.perf_counter()
            s.read(1.0, box, threads=n)
            best = min(best, time.perf_counter() - t0)
        out[f"{n}_threads"] = {
            "decode_limit_source_mp_per_s": limit,
            "reader_source_mp_per_s": source_mp / best,
            "fraction_of_decode_limit": source_mp / limit / best,
            "read_s": best,
        }
    # Where one thread's time goes: the profiler's own time of each part of one read.
    import cProfile
    import pstats

    level._cache.__init__()
    profiler = cProfile.Profile()
    profiler.enable()
    s.read(1.0, box, threads=1)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts = {"jpeg_decode": 0.0, "resample": 0.0, "file_reads": 0.0, "total": 0.0}
    for (filename, _, name), (_, _, tottime, cumtime, _) in stats.items():
        parts["total"] += tottime
        if "jpeg" in name and "decode" in name:
            parts["jpeg_decode"] += tottime
        elif any(k in name for k in ("resize", "matvecs", "matmul")) or "resample" in filename:
            parts["resample"] += tottime
        elif "pread" in name:
            parts["file_reads"] += tottime
    parts["assembly_cache_copies_python"] = parts["total"] - parts["jpeg_decode"] - parts["resample"] - parts["file_reads"]
    out["where_1_thread_time_goes_s"] = parts
    # OpenSlide on the same region: its decode + ARGB (premultiplied) -> RGBA in openslide-python,
    # and the RGBA -> RGB composite, in 2048 px blocks at 1 thread.
    osr = openslide.OpenSlide(path)
    t_region = t_rgb = 0.0
    for by in range(sy0, sy1, 2048):
        for bx in range(sx0, sx1, 2048):
            t0 = time.perf_counter()
            rgba = np.asarray(osr.read_region((bx, by), 0, (min(2048, sx1 - bx), min(2048, sy1 - by))))
            t1 = time.perf_counter()
            rgba_to_rgb(rgba, (255, 255, 255))
            t_rgb += time.perf_counter() - t1
            t_region += t1 - t0
    osr.close()
    s.close()
    out["openslide_1_thread"] = {"read_region_s": t_region, "rgba_to_rgb_s": t_rgb,
                                 "source_mp_per_s": source_mp / (t_region + t_rgb)}
    return out


def bench_decode_limit(path: str, tile: int, quick: bool) -> dict[str, Any]:
    threads = sorted({1, 2, os.cpu_count() or 1})
    return in_fresh_process(_decode_limit_worker, path, tile, threads, 0.5 if quick else 3.0)


# --- all -----------------------------------------------------------------------------------------


def run(quick: bool, tmp: str) -> dict[str, Any]:
    tile = 1024 if quick else 3840
    repeats = 1 if quick else 3
    side_mm = 1.2 if quick else 4.0
    slide = str(cached_slide("peers", seed=3, width_mm=side_mm, height_mm=side_mm, mpp=0.25,
                             n_tumours=1, level_factor=8))
    aperio = str(cached_slide("aperio", seed=4, width_mm=side_mm + 0.00025, height_mm=side_mm + 0.00025,
                              mpp=0.25, n_tumours=1, level_factor=4))
    result: dict[str, Any] = {"benchmark": "peers", "mode": "quick" if quick else "full", "cpus": os.cpu_count()}
    merge_size = (3000, 2400, 1024, 128) if quick else (20000, 16000, 7680, 1024)
    result["merge"] = bench_merge(*merge_size, repeats=repeats)
    result["resample"] = bench_resample(repeats)
    cases = [("level0_0.25mpp", slide, None), ("level0_0.5mpp", slide, 0.5), ("level0_0.499mpp", slide, 0.499),
             ("level0_0.2527mpp", slide, 0.2527), ("aperio_like_pyramid", aperio, None)]
    cmu = shared_slide(CMU)
    if cmu:
        cases.append(("real_cmu_small_region", cmu, None))
    methods = None
    if quick:  # about a minute: two cases, no TIAToolbox (its import alone takes seconds)
        cases = [cases[0], cases[4]]
        methods = ["tseg", "tseg-openslide", "openslide-cv2"]
    result["reading"] = {}
    for name, path, mpp in cases:
        t = 10**6 if name.startswith("real") else tile
        result["reading"][name] = bench_read_case(name, path, mpp, t, repeats, tmp, methods, slow_repeats=repeats)
    result["decode_limit"] = bench_decode_limit(slide, tile, quick)
    return result


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.quick, tmp)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
