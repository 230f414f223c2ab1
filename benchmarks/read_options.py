"""The opt-in reading speed-ups on real slides: time saved and agreement of the final masks.

For each real slide in ``../shared/data`` and each opt-in (``dct_scaling``; ``level_tolerance``
where the slide has a level within a few percent of 1 µm/px), the whole slide is segmented by
the bundled demonstration model (ONNX Runtime, CPU) on the exact path and with the option:
reading time (1 µm/px tiles), whole-slide time, the DSC of the final 5 µm/px masks against the
exact path (1.0 when both are empty), and the mean absolute difference of the 1 µm/px
probability maps. The TCGA slide has no MPP; it is read as 0.505 µm/px, where its level 1
(downsample 2.0005) is 1.03 % coarser than 1 µm/px.

    python -m benchmarks.read_options [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.common import shared_slide, write_json

CASES = [
    ("cmu-1-small-region.svs", None, {"dct_scaling": True}),
    ("tcga-cr-7395-01a-01-ts1.svs", 0.505, {"level_tolerance": 2.0}),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_case(path: str, mpp: float | None, option: dict[str, Any]) -> dict[str, Any]:
    from tseg.runtime.execution.segmenter import Segmenter

    results = {}
    for name, extra in (("exact", {}), ("option", option)):
        segmenter = Segmenter(None, providers="cpu", mpp=mpp, **extra)
        segmenter.segment_slide(path)  # warm: ONNX Runtime plans its memory, the file cache fills
        t0 = time.perf_counter()
        result = segmenter.segment_slide(path)
        results[name] = (result, time.perf_counter() - t0)
    (exact, exact_s), (opt, opt_s) = results["exact"], results["option"]
    p_exact, p_opt = exact.probability_full.astype(np.int16), opt.probability_full.astype(np.int16)
    return {
        "option": option, "mpp": mpp,
        "level_exact": exact.summary["slide"]["level_read_at_model_mpp"],
        "level_option": opt.summary["slide"]["level_read_at_model_mpp"],
        "dct_scale_option": opt.summary["slide"]["dct_scale_at_model_mpp"],
        "read_s_exact": exact.summary["timings_s"]["read_s"], "read_s_option": opt.summary["timings_s"]["read_s"],
        "read_speedup": exact.summary["timings_s"]["read_s"] / max(opt.summary["timings_s"]["read_s"], 1e-9),
        "slide_s_exact": exact_s, "slide_s_option": opt_s,
        "mask_dsc_vs_exact": dice(exact.mask, opt.mask),
        "mask_pixels_exact": int(exact.mask.sum()), "mask_pixels_option": int(opt.mask.sum()),
        "probability_mean_abs_diff_levels": float(np.abs(p_exact - p_opt).mean()),
        "model": "bundled demonstration model (not the paper's network)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"benchmark": "read_options"}
    for name, mpp, option in CASES:
        path = shared_slide(name)
        out[name] = run_case(path, mpp, option) if path else {"skipped": f"{name} is not in ../shared/data"}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
