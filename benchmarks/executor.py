"""The double-buffered CUDA executor at the paper's tile size with a CuPy stand-in compute.

The check is installed with tseg-rt (:mod:`tseg.runtime.bench.executor_check`, the ``executor``
step of ``tseg-rt bench --check``): copies overlapping compute (CUDA event times), outputs
bit-identical to one tile at a time and to NumPy, pipelined against one-tile-at-a-time seconds
per tile, and the GPU's busy fraction. Needs a CUDA GPU, cuda-bindings and CuPy.

    python -m benchmarks.executor [--size 7680] [--tiles 8] [--compute-ms 150] [--json out.json]
"""

from __future__ import annotations

import argparse

from benchmarks.common import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=7680)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--compute-ms", type=float, default=150.0, help="target stand-in compute per tile")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.runtime.bench.executor_check import check_executor
    from tseg.runtime.errors import BackendUnavailableError
    from tseg.runtime.execution.cuda import cuda_status

    status = cuda_status()
    if not status.ok:
        raise SystemExit(f"benchmarks.executor: no CUDA GPU here ({status.reason}); skipped")
    try:
        result = check_executor(args.size, args.tiles, args.compute_ms)
    except BackendUnavailableError as exc:
        raise SystemExit(f"benchmarks.executor: {exc}; skipped") from None
    result["benchmark"] = "executor"
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
