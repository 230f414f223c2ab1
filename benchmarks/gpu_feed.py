"""Does the CPU feed the GPU? A whole slide through the Segmenter with a stand-in backend.

The backend sleeps ``0.15 s`` per 7680² tile, what the paper's network should take on an
H100-class GPU (42 TFLOP per tile), scaled by tile area when smaller tiles are used (quick
mode and the 2-core default use 3840² tiles: 0.0375 s each; the per-pixel rates, and so the
fractions, are the same). The slide goes through :meth:`Segmenter.segment_slide`, the library
call ``tseg-rt run`` makes per slide, at 2 reader threads. Reported: the fraction of the tile
stage's wall time the backend is busy and each CPU stage's busy time as a fraction of it.

Then an **extrapolation** (not a measurement): the CPU time one tile needs per core (reading at
1 thread, plus merging) divided by the backend time per tile gives the cores at which reading
and merging keep up with the backend, assuming they scale linearly with cores (reading is
block-parallel and decoding releases the GIL; check the scaling measured by
``benchmarks.peers`` before trusting it): ``cores_for_90 = ceil(cpu_s_per_tile / (0.9 *
backend_s))`` keeps the backend busy >= 90 %.

Two slides: level 0 at 0.25 µm/px (every tile decodes 16x its pixels) and an Aperio-like
pyramid whose 4x level is read (1x its pixels).

    python -m benchmarks.gpu_feed [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from benchmarks.common import cached_slide, write_json
from benchmarks.pipeline_overlap import fixed_cost_backend

H100_S_PER_7680_TILE = 0.15


def _feed(path: str, tile: int, overlap: int, reader_threads: int) -> dict[str, Any]:
    from tseg.runtime.method.merge import merge_tiles
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.wsi.slide import open_slide
    from tseg.runtime.method.tiling import plan_tiles

    cost = H100_S_PER_7680_TILE * (tile / 7680) ** 2
    backend = fixed_cost_backend(cost, tile, overlap)
    segmenter = Segmenter(backend, keep_full_probability=False, reader_threads=reader_threads)
    t0 = time.perf_counter()
    result = segmenter.segment_slide(path)
    total = time.perf_counter() - t0
    t = result.summary["timings_s"]
    tiles = result.summary["tiles"]
    wall = t["wall_s"]
    run = max(1, tiles["tiles_run"])
    out: dict[str, Any] = {
        "slide": path, "tile_px": tile, "backend_s_per_tile": cost, "reader_threads": reader_threads,
        "tiles_run": tiles["tiles_run"], "tile_stage_wall_s": wall, "slide_total_s": total,
        "backend_busy_fraction": (run * cost) / wall,
        "stage_busy_fraction_of_wall": {k: t[k] / wall for k in ("read_s", "infer_s", "merge_s")},
        "other_stages_s": {k: t[k] for k in ("open_s", "overview_s", "background_s", "postprocess_s")},
        "level_read": result.summary["slide"]["level_read_at_model_mpp"],
    }
    # Per-core CPU cost of one tile: a read at 1 thread and the merge of its share.
    with open_slide(path, reader_threads=1) as s:
        w, h = s.size_at(1.0)
        box = ((w - tile) // 2, (h - tile) // 2, min(tile, w), min(tile, h))
        s.read(1.0, box)
        t1 = time.perf_counter()
        s.read(1.0, box)
        read_1 = time.perf_counter() - t1
    import numpy as np

    plan = plan_tiles(w, h, tile, overlap)
    outputs = [(p, np.full((p.height, p.width), 7, np.uint8)) for p in plan]
    t1 = time.perf_counter()
    merge_tiles(h, w, outputs, threads=1)
    merge_1 = (time.perf_counter() - t1) / len(plan)
    cpu = read_1 + merge_1
    out["per_tile_1_core_s"] = {"read": read_1, "merge": merge_1}
    out["extrapolated_cores_for_backend_busy_90"] = math.ceil(cpu / (0.9 * cost))
    out["extrapolation_note"] = ("extrapolated, not measured: assumes reading and merging scale linearly "
                                 "with cores from the 1-thread rate")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reader-threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    side = 1.2 if args.quick else 4.0
    tile, overlap = (1024, 128) if args.quick else (3840, 512)
    level0 = str(cached_slide("peers", seed=3, width_mm=side, height_mm=side, mpp=0.25, n_tumours=1, level_factor=8))
    aperio = str(cached_slide("aperio", seed=4, width_mm=side + 0.00025, height_mm=side + 0.00025, mpp=0.25,
                              n_tumours=1, level_factor=4))
    result = {"benchmark": "gpu_feed", "h100_s_per_7680_tile": H100_S_PER_7680_TILE,
              "level0_0.25mpp": _feed(level0, tile, overlap, args.reader_threads),
              "aperio_like_level1": _feed(aperio, tile, overlap, args.reader_threads)}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
