"""Peak memory of processing a slide against the estimate ``wsi/limits.py`` refuses slides by.

Each slide runs in a fresh process and writes every output; reported per run: peak RSS above the
level after the model was loaded, the estimate (:func:`tseg.runtime.wsi.limits.budget_for`, with
its parts: map, tiles, reader, model, backend; the model part, already loaded when the peak is
taken, is left out of the comparison) and their ratio (the estimate must stay above the peak).

* ``colour``: generated slides of 4 x 3, 8 x 6 and 12 x 9 mm at 1 µm/px (12, 48 and 108 MP at
  the model's resolution) with a colour model of 1024 px tiles, so that the tiles stay small next
  to the slide; the slope between the two largest, in bytes per model pixel, is what
  ``BYTES_PER_MODEL_PIXEL`` must cover.
* ``one-tile``: a 4 x 4 mm slide at 0.5 µm/px stored as one 8192 px deflate tile (the reader's
  part: the decoded tile, cached once and decoded once).
* ``bundled``: the bundled model (``runtime/models/default.onnx``, 7680 px tiles) on ONNX Runtime
  on the CPU, on a 3 x 2 mm slide (the backend's part: about 5.7 GB for one tile).

A paper-sized network's ONNX (the paper's encoder, not the bundled demonstration model) is not
included: export it with ``tseg.training`` and pass it as ``--model`` to measure it the same way.

    python -m benchmarks.slide_memory [--cases colour,one-tile,bundled] [--model M.onnx] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cached_slide, in_fresh_process, peak_rss_mb, rss_mb, write_json

SIZES_MM = ((4, 3), (8, 6), (12, 9))
CASES = ("colour", "one-tile", "bundled")


def _run(slide: str, model: str | None, out: str) -> dict:
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.outputs.files import write_outputs
    from tseg.runtime.wsi.limits import backend_memory, budget_for
    from tseg.runtime.wsi.slide import open_slide

    segmenter = Segmenter(model)
    c = segmenter.contract
    with open_slide(slide) as opened:
        budget = budget_for(opened, c.mpp, c.tile_size, segmenter.settings.prefetch + 2,
                            backend=backend_memory(segmenter.backend))
    base = rss_mb()
    t0 = time.perf_counter()
    result = segmenter.segment_slide(slide)
    write_outputs(result, Path(out), c.mpp)
    w, h = result.summary["slide"]["size_at_model_mpp"]
    peak = peak_rss_mb() - base
    # The peak is taken above the loaded model, so the estimate's "model" part (the loaded session)
    # is left out of the comparison and reported beside it.
    parts = dict(budget.parts)
    estimate = (budget.needed_bytes - parts.get("model", 0)) / 2**20
    return {"model_mp": w * h / 1e6, "tile_px": c.tile_size, "peak_extra_mb": peak, "estimate_mb": estimate,
            "estimate_parts_mb": {k: round(v / 2**20) for k, v in budget.parts},
            "estimate_over_peak": estimate / max(peak, 1.0), "memory_model": budget.backend_basis,
            "wall_s": time.perf_counter() - t0}


def one_tile_slide(path: Path, side: int = 8192, mpp: float = 0.5) -> Path:
    """A slide stored as one ``side`` px deflate tile (textured, so that tissue is found)."""
    import numpy as np
    import tifffile

    if not path.exists():
        rng = np.random.default_rng(3)
        img = np.full((side, side, 3), 240, np.uint8)
        q = side // 4
        img[q : 3 * q, q : 3 * q] = rng.integers(60, 140, (2 * q, 2 * q, 3), dtype=np.uint8)
        tifffile.imwrite(path, img, tile=(side, side), compression="zlib", photometric="rgb",
                         resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def _report(name: str, run: dict) -> None:
    print(f"{name}: {run['model_mp']:.0f} MP at the model's resolution, {run['tile_px']} px tiles: peak "
          f"+{run['peak_extra_mb']:.0f} MB, estimate {run['estimate_mb']:.0f} MB {run['estimate_parts_mb']} "
          f"(x{run['estimate_over_peak']:.2f}), {run['wall_s']:.1f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--model", default=None, help="for the bundled case: another ONNX model (a paper-sized "
                                                      "network) instead of the bundled one")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_colour_model

    from tseg.runtime.wsi.limits import BYTES_PER_MODEL_PIXEL

    result: dict = {"benchmark": "slide_memory", "limits_assume": BYTES_PER_MODEL_PIXEL, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        colour = str(make_colour_model(Path(tmp) / "m.onnx", tile=1024, overlap=64))
        if "colour" in cases:
            runs = []
            for w, h in SIZES_MM:
                slide = cached_slide("memory", seed=5, width_mm=w, height_mm=h, mpp=1.0)
                run = in_fresh_process(_run, str(slide), colour, str(Path(tmp) / f"out-{w}x{h}"))
                runs.append({"case": "colour", "size_mm": [w, h], **run})
                _report(f"colour {w} x {h} mm", run)
            a, b = runs[-2], runs[-1]
            slope = (b["peak_extra_mb"] - a["peak_extra_mb"]) * 2**20 / 1e6 / (b["model_mp"] - a["model_mp"])
            print(f"slope between the two largest: {slope:.2f} bytes per model pixel")
            result.update(bytes_per_model_pixel=slope)
            result["runs"] += runs
        if "one-tile" in cases:
            slide = one_tile_slide(Path(tmp) / "one-tile.tiff")
            run = in_fresh_process(_run, str(slide), colour, str(Path(tmp) / "out-one-tile"))
            result["runs"].append({"case": "one-tile", "size_mm": [4, 4], **run})
            _report("one 8192 px tile", run)
        if "bundled" in cases:
            slide = cached_slide("memory", seed=5, width_mm=3, height_mm=2, mpp=1.0)
            run = in_fresh_process(_run, str(slide), args.model, str(Path(tmp) / "out-bundled"))
            result["runs"].append({"case": "bundled", "model": args.model or "bundled", "size_mm": [3, 2], **run})
            _report(f"{args.model or 'bundled model'} on the CPU, 3 x 2 mm", run)
    low = [r for r in result["runs"] if r["estimate_over_peak"] < 1.0]
    for r in low:
        print(f"WARNING: the estimate is below the measured peak for {r['case']} {r['size_mm']}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
