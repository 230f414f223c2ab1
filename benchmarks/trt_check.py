"""TensorRT on a GPU machine: build an engine, check it, time it. Needs TensorRT and a CUDA GPU.

Installed with tseg-rt as the ``engine`` step of ``tseg-rt bench --check``
(:mod:`tseg.runtime.bench.gpu_engines`): an ``.onnx`` model is built into a temporary plan
(profile 512² / tile / tile), streamed tiles are checked bit-identical to tiles run one at a time,
the engine is compared with ONNX Runtime FP32 on the CPU, and timed (s/tile, streamed s/tile,
TFLOP/s from the graph's FLOP count).

    python -m benchmarks.trt_check [--onnx model.onnx | --onnx model.plan] [--tile 7680] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", default=None, help="model or plan (default: the bundled demonstration model)")
    parser.add_argument("--tile", type=int, default=7680)
    parser.add_argument("--parity-size", type=int, default=1024, help="tile side for the comparison with ONNX Runtime")
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.runtime.bench.engine import default_model
    from tseg.runtime.bench.gpu_engines import tensorrt_row

    model = Path(args.onnx) if args.onnx else default_model()
    result = tensorrt_row(model, args.tile, 0, args.time_limit, args.parity_size)
    result["benchmark"] = "trt_check"
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
