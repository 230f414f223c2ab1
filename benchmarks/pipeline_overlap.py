"""Overlap of reading, inference and merging in the tile pipeline.

A generated multi-tile slide and a backend with a fixed per-tile cost (it sleeps, as a GPU
frees the CPU): if the stages overlap, the wall time approaches the slowest stage instead of
the sum of the stages (target: wall <= 1.15 x slowest). Also prints peak memory.

    python -m benchmarks.pipeline_overlap [--quick] [--tile-cost 0.4] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import cached_slide, peak_rss_mb, rss_mb, write_json


def fixed_cost_backend(cost_s: float, tile: int, overlap: int):
    from tseg.runtime.execution.backends.base import Backend
    from tseg.runtime.execution.contract import ModelContract

    class FixedCost(Backend):
        kind = "fixed-cost"

        def __init__(self) -> None:
            super().__init__(path=None, contract=ModelContract(tile_size=tile, min_overlap=overlap, divisor=32))

        def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
            time.sleep(cost_s)
            return np.ascontiguousarray(255 - batch[..., 1][:, None])

        def describe(self) -> dict:
            return {"kind": self.kind, "cost_s": cost_s}

    return FixedCost()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tile-cost", type=float, default=None, help="seconds per tile (default 0.4; quick 0.15)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.runtime.execution.segmenter import Segmenter

    cost = args.tile_cost if args.tile_cost is not None else (0.15 if args.quick else 0.4)
    size = (4.0, 3.0) if args.quick else (8.0, 6.0)
    path = cached_slide("pipeline", seed=5, width_mm=size[0], height_mm=size[1], mpp=0.5)
    tile, overlap = 1024, 128
    segmenter = Segmenter(fixed_cost_backend(cost, tile, overlap), keep_full_probability=False)
    base = rss_mb()
    t0 = time.perf_counter()
    result = segmenter.segment_slide(path)
    wall_total = time.perf_counter() - t0
    t = result.summary["timings_s"]
    stages = {"read_s": t["read_s"], "infer_s": t["infer_s"], "merge_s": t["merge_s"]}
    slowest = max(stages.values())
    out = {
        "benchmark": "pipeline_overlap",
        "slide_mm": size,
        "tile_px": tile,
        "tile_cost_s": cost,
        "tiles": result.summary["tiles"],
        "stage_busy_s": stages,
        "tile_stage_wall_s": t["wall_s"],
        "wall_over_slowest_stage": t["wall_s"] / slowest,
        "wall_over_sum_of_stages": t["wall_s"] / sum(stages.values()),
        "slide_total_s": wall_total,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": base,
        "target": "wall_over_slowest_stage <= 1.15",
    }
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
