"""Tile latency of ``tseg-rt view`` against openslide-python's ``DeepZoomGenerator``.

The same 254 px Deep Zoom tiles (overlap 1) of a generated 0.25 µm/px slide, at full resolution
and at 1/4 zoom, each one JPEG-encoded (quality 85; DeepZoomGenerator's tiles saved with Pillow as
openslide-python's Deep Zoom server does): p50 and p99 per tile, *cold* (a fresh viewer library,
an empty tile cache; a freshly opened OpenSlide) and *warm* (the same tiles again), with 1 client
and with 8 concurrent clients (threads), and the ratio viewer / DeepZoomGenerator. In process, and
with ``--http`` also through a real ``tseg-rt view`` (a subprocess on loopback; one HTTP client per
thread), DeepZoomGenerator still in process, so that ratio includes HTTP on one side only.

    python -m benchmarks.viewer [--quick] [--tiles N] [--http] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import cached_slide, write_json


def _fake_result(slide: Path, out: Path) -> None:
    """A results folder whose one result records ``slide`` (all the slide layer needs)."""
    from tseg.runtime.wsi.slide import open_slide

    with open_slide(slide) as s:
        mpp = list(s.mpp)
    (out / "s").mkdir(parents=True)
    (out / "s" / "summary.json").write_text(json.dumps(
        {"slide": {"path": os.path.realpath(slide), "mpp_level0": mpp, "mpp_source": "metadata"}}))


def _latencies(get: Callable[[tuple[int, int, int]], bytes], tiles: list[tuple[int, int, int]],
               clients: int) -> list[float]:
    def one(t: tuple[int, int, int]) -> float:
        t0 = time.perf_counter()
        get(t)
        return time.perf_counter() - t0

    if clients == 1:
        return [one(t) for t in tiles]
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, tiles))


def _http_cases(out: Path, slide: Path, dz: Any, count: int) -> dict:
    """The full-resolution tiles through a real `tseg-rt view` (a fresh process: a cold cache)."""
    import subprocess
    import sys
    import threading

    import httpx
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    level = dz.level_count - 1
    cols, rows = dz.level_tiles[level]
    rng = random.Random(1)
    cases = {}
    for clients in (1, 8):
        tiles = list(dict.fromkeys((level, rng.randrange(cols), rng.randrange(rows)) for _ in range(count)))
        proc = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "view", str(out), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = ""
            while not url:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("tseg-rt view did not start")
                if line.startswith("tseg-rt view: "):
                    url = line.split()[-1]
            local = threading.local()

            def ours(t: tuple[int, int, int]) -> bytes:
                if not hasattr(local, "client"):
                    local.client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(keepalive_expiry=2))
                r = local.client.get(f"slides/s/slide_files/{t[0]}/{t[1]}_{t[2]}.jpeg")
                r.raise_for_status()
                return r.content

            ours((level, 0, 0))  # the slide opened, a connection made: not a tile's latency
            with openslide.OpenSlide(str(slide)) as osr:
                ref = DeepZoomGenerator(osr, tile_size=254, overlap=1)

                def theirs(t: tuple[int, int, int]) -> bytes:
                    buf = io.BytesIO()
                    ref.get_tile(t[0], (t[1], t[2])).save(buf, "jpeg", quality=85)
                    return buf.getvalue()

                case = _compare(ours, theirs, tiles, clients)
            cases[f"http_full_{clients}_clients"] = case
            print(f"http     {clients} client(s): " + "; ".join(
                f"{t} viewer p50 {c['viewer']['p50_ms']} ms p99 {c['viewer']['p99_ms']} ms (ratio {c['p50_ratio']})"
                for t, c in case.items()), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return cases


def _compare(ours: Any, theirs: Any, tiles: list[tuple[int, int, int]], clients: int) -> dict[str, Any]:
    """The same tiles through the viewer and through DeepZoomGenerator, cold (first read) then
    warm (read again), with the p50 and p99 ratios."""
    case = {}
    for temp in ("cold", "warm"):
        a = _stats(_latencies(ours, tiles, clients))
        b = _stats(_latencies(theirs, tiles, clients))
        case[temp] = {"viewer": a, "deepzoomgenerator": b,
                      "p50_ratio": round(a["p50_ms"] / max(b["p50_ms"], 1e-9), 3),
                      "p99_ratio": round(a["p99_ms"] / max(b["p99_ms"], 1e-9), 3)}
    return case


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "tiles": len(seconds)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small slide and 24 tiles per case (CI)")
    parser.add_argument("--tiles", type=int, default=None, help="tiles per case (default 200, quick 24)")
    parser.add_argument("--http", action="store_true", help="also through a real `tseg-rt view` over HTTP")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    from tseg.runtime.service.viewer.deepzoom import DeepZoom
    from tseg.runtime.service.viewer.library import Library

    count = args.tiles or (24 if args.quick else 200)
    size_mm = 1.5 if args.quick else 5.0
    slide = cached_slide("viewer", seed=5, width_mm=size_mm, height_mm=size_mm, mpp=0.25, n_tumours=1)
    results: dict = {"benchmark": "viewer", "slide": str(slide), "tile_size": 254, "overlap": 1, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="tseg-viewer-bench-") as tmp:
        out = Path(tmp) / "out"
        _fake_result(slide, out)
        with openslide.OpenSlide(str(slide)) as osr:
            dz = DeepZoom(*osr.dimensions)
        rng = random.Random(0)
        for zoom, level in (("full", dz.level_count - 1), ("quarter", dz.level_count - 3)):
            cols, rows = dz.level_tiles[level]
            tiles = [(level, rng.randrange(cols), rng.randrange(rows)) for _ in range(count)]
            tiles = list(dict.fromkeys(tiles))  # cold means each tile once
            for clients in (1, 8):
                library = Library(out)
                osr = openslide.OpenSlide(str(slide))
                ref = DeepZoomGenerator(osr, tile_size=254, overlap=1)

                def ours(t: tuple[int, int, int]) -> bytes:
                    return library.tile("s", "slide", *t)

                def theirs(t: tuple[int, int, int]) -> bytes:
                    buf = io.BytesIO()
                    ref.get_tile(t[0], (t[1], t[2])).save(buf, "jpeg", quality=85)
                    return buf.getvalue()

                library.result("s")  # opening the slide is not a tile's latency
                case = _compare(ours, theirs, tiles, clients)
                results["cases"][f"{zoom}_{clients}_clients"] = case
                library.close()
                osr.close()
                print(f"{zoom:8s} {clients} client(s): " + "; ".join(
                    f"{t} viewer p50 {c['viewer']['p50_ms']} ms p99 {c['viewer']['p99_ms']} ms, DeepZoomGenerator "
                    f"p50 {c['deepzoomgenerator']['p50_ms']} ms p99 {c['deepzoomgenerator']['p99_ms']} ms "
                    f"(ratio {c['p50_ratio']})" for t, c in case.items()), flush=True)
        if args.http:
            results["cases"].update(_http_cases(out, slide, dz, count))
    results["goals"] = "warm p50 <= 20 ms and p99 <= 100 ms per 254 px tile; cold no slower than DeepZoomGenerator"
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
