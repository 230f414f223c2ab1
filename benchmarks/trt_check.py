"""TensorRT check on a GPU machine: build an engine, parity against ONNX Runtime FP32 on real
H&E tiles, and time per tile. Needs TensorRT, a CUDA GPU and an exported ONNX model.

    python -m benchmarks.trt_check --onnx model.onnx [--fp32-onnx model.fp32.onnx] [--tile 7680]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", default=None, help="model to build (default: the bundled demonstration model)")
    parser.add_argument("--fp32-onnx", default=None, help="FP32 graph for the parity reference (default: --onnx)")
    parser.add_argument("--tile", type=int, default=7680)
    parser.add_argument("--parity-size", type=int, default=1024, help="tile side for the parity comparison on CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.engines.build import BuildSettings, build_engine
    from tseg.export.parity import agreement, parity_inputs
    from tseg.runtime.execution.backends import load_backend
    from tseg.runtime.models import default_model_path

    onnx = Path(args.onnx) if args.onnx else default_model_path()
    reference = load_backend(args.fp32_onnx or onnx, providers="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "model.plan"
        t0 = time.perf_counter()
        manifest = build_engine(onnx, plan, BuildSettings(min_tile=512, opt_tile=args.tile, max_tile=args.tile))
        build_s = time.perf_counter() - t0
        engine = load_backend(plan)
        size = args.parity_size // 32 * 32
        images, source = parity_inputs([(size, size), (size, size // 2)])
        engine_out = [engine.infer(i[None])[0, 0] for i in images]
        ref_out = [reference.infer(i[None])[0, 0] for i in images]
        parity = agreement(engine_out, ref_out).as_dict()
        tile = np.random.default_rng(0).integers(0, 256, (1, args.tile, args.tile, 3), dtype=np.uint8)
        engine.infer(tile)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            engine.infer(tile)
            times.append(time.perf_counter() - t0)
        streamed_t0 = time.perf_counter()
        list(engine.infer_many((i, tile) for i in range(args.repeats)))
        streamed = (time.perf_counter() - streamed_t0) / args.repeats
    result = {"benchmark": "trt_check", "onnx": str(onnx), "build_s": build_s, "manifest": manifest.to_dict(),
              "parity_inputs": source, "engine_vs_onnxruntime_fp32": parity,
              "s_per_tile_single": float(np.median(times)), "s_per_tile_streamed": streamed,
              "tile": args.tile}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
