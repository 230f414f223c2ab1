"""Peak memory of processing a slide, per pixel at the model's resolution (wsi/limits.py).

Segments generated slides of 4 x 3, 8 x 6 and 12 x 9 mm at 1 µm/px (12, 48 and 108 MP at the
model's resolution) with a colour model of 1024 px tiles, so that the tiles in flight stay small
next to the slide, and writes every output, each slide in a fresh process. Reported: peak RSS
above the level after the model was loaded, and the slope between the two largest slides in bytes
per model pixel: what ``tseg.runtime.wsi.limits.BYTES_PER_MODEL_PIXEL`` must cover.

    python -m benchmarks.slide_memory [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cached_slide, in_fresh_process, peak_rss_mb, rss_mb, write_json

SIZES_MM = ((4, 3), (8, 6), (12, 9))


def _run(slide: str, model: str, out: str) -> dict:
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.outputs.files import write_outputs

    segmenter = Segmenter(model)
    base = rss_mb()
    t0 = time.perf_counter()
    result = segmenter.segment_slide(slide)
    write_outputs(result, Path(out), segmenter.contract.mpp)
    w, h = result.summary["slide"]["size_at_model_mpp"]
    return {"model_mp": w * h / 1e6, "peak_extra_mb": peak_rss_mb() - base, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_colour_model

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_colour_model(Path(tmp) / "m.onnx", tile=1024, overlap=64)
        for w, h in SIZES_MM:
            slide = cached_slide("memory", seed=5, width_mm=w, height_mm=h, mpp=1.0)
            run = in_fresh_process(_run, str(slide), str(model), str(Path(tmp) / f"out-{w}x{h}"))
            runs.append({"size_mm": [w, h], **run})
            print(f"{w} x {h} mm: {run['model_mp']:.0f} MP, +{run['peak_extra_mb']:.0f} MB, {run['wall_s']:.1f} s")
    a, b = runs[-2], runs[-1]
    slope = (b["peak_extra_mb"] - a["peak_extra_mb"]) / (b["model_mp"] - a["model_mp"])
    print(f"slope between the two largest: {slope:.2f} bytes per model pixel")
    from tseg.runtime.wsi.limits import BYTES_PER_MODEL_PIXEL

    result = {"benchmark": "slide_memory", "runs": runs, "bytes_per_model_pixel": slope,
              "limits_assume": BYTES_PER_MODEL_PIXEL}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
