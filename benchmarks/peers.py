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
    from tseg.runtime.tiling import plan_tiles

    plan = plan_tiles(width, height, tile, overlap)
    rng = np.random.default_rng(0)
    return plan, [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in plan]


def _merge_worker(method: str, width: int, height: int, tile: int, overlap: int, repeats: int) -> dict:
    plan, outputs = _tile_outputs(width, height, tile, overlap)
    pairs = list(zip(plan.tiles, outputs))
    base = rss_mb()
    if method.startswith("tseg"):
        from tseg.runtime.merge import merge_tiles

        threads = 1 if method == "tseg-1-thread" else None
        times, out = _repeat(lambda: merge_tiles(height, width, pairs, threads=threads), repeats)
    elif method == "reference-float64":
        from tseg.runtime.merge import merge_tiles_reference

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
        from tseg.runtime.merge import merge_tiles_reference

        ref = merge_tiles_reference(height, width, pairs)
        diff = np.abs(out.astype(np.int16) - ref)
        result["identical_to_float64_fraction"] = float(1 - np.count_nonzero(diff) / diff.size)
        result["max_level_difference"] = int(diff.max())
    return result


def bench_merge(width: int, height: int, tile: int, overlap: int, repeats: int) -> dict[str, Any]:
    heavy = width * height > 50e6
    methods = ["tseg", "tseg-1-thread"] + ([] if heavy else ["reference-float64"])
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
    if heavy:
        out["reference-float64"] = {"skipped": "two full float64 arrays: too much memory at this size; "
                                               "agreement is tested in tests/runtime/test_merge.py"}
    else:
        out["speedup_vs_reference"] = out["reference-float64"]["min_s"] / out["tseg"]["min_s"]
    out["tiatoolbox"] = {"skipped": "TIAToolbox 2.x merges inside its engine through dask row and column "
                                    "chunks; it has no stand-alone merge of a given tile grid to time"}
    return out


# --- reading ------------------------------------------------------------------------------------


def _read_worker(method: str, path: str, mpp: float | None, tile: int, repeats: int, threads: int | None) -> dict:
    import cv2

    from tseg.runtime.slide import open_slide

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


def _decode_limit_worker(path: str, threads_list: list[int], seconds: float) -> dict:
    """imagecodecs in a tight loop over the level-0 JPEG tiles against the reader, per thread count."""
    from concurrent.futures import ThreadPoolExecutor

    import tifffile

    from tseg.runtime.slide import open_slide

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tables = page.jpegtables
        fh = tif.filehandle
        chunks = []
        for off, count in zip(page.dataoffsets, page.databytecounts):
            fh.seek(off)
            chunks.append(fh.read(count))
        tile_px = page.tilewidth * page.tilelength
        decode = page.decode
        indices = list(range(len(chunks)))

        def decode_all(part: list[int]) -> int:
            for i in part:
                decode(chunks[i], i, jpegtables=tables)
            return len(part)

        out: dict[str, Any] = {"tiles": len(chunks), "tile_px": [page.tilewidth, page.tilelength],
                               "compression": int(page.compression)}
        for n in threads_list:
            parts = [indices[k::n] for k in range(n)]
            t0, done = time.perf_counter(), 0
            with ThreadPoolExecutor(n) as pool:
                while time.perf_counter() - t0 < seconds:
                    done += sum(pool.map(decode_all, parts))
            out[f"decode_limit_mp_per_s_{n}_threads"] = done * tile_px / 1e6 / (time.perf_counter() - t0)
    with open_slide(path) as s:
        w0, h0 = s.dimensions
        fx, _ = s.factors(1.0)
        s.read(1.0)  # warm the file cache and the allocator

        def timed_read(mpp: float, n: int) -> float:
            best = float("inf")
            for _ in range(2):
                s._source._levels[0]._cache.__init__()  # every read starts with no decoded tile
                t0 = time.perf_counter()
                s.read(mpp, threads=n)
                best = min(best, time.perf_counter() - t0)
            return best

        for n in threads_list:
            # Decode + assembly: the level read at its own resolution (ratio 1, no resampling).
            level_s = timed_read(s.mpp_x, n)
            full_s = timed_read(1.0, n)
            limit = out[f"decode_limit_mp_per_s_{n}_threads"]
            out[f"reader_{n}_threads"] = {
                "level0_read_mp_per_s": w0 * h0 / 1e6 / level_s,
                "read_at_1mpp_source_mp_per_s": w0 * h0 / 1e6 / full_s,
                "fraction_of_decode_limit_level0": w0 * h0 / 1e6 / level_s / limit,
                "fraction_of_decode_limit_at_1mpp": w0 * h0 / 1e6 / full_s / limit,
                "seconds": {"decode_at_limit": w0 * h0 / 1e6 / limit, "decode_and_assembly": level_s,
                            "decode_assembly_and_resample": full_s},
            }
    return out


def bench_decode_limit(path: str, quick: bool) -> dict[str, Any]:
    threads = sorted({1, 2, os.cpu_count() or 1})
    return in_fresh_process(_decode_limit_worker, path, threads, 0.5 if quick else 3.0)


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
    result["decode_limit"] = bench_decode_limit(slide, quick)
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
