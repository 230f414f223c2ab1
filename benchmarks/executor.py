"""The double-buffered CUDA executor at the paper's tile size, with a stand-in compute (CuPy).

Per 7680 x 7680 tile (177 MB in, 59 MB out): pipelined time per tile against the same work
one tile at a time (copies, compute, wait), the copy and compute times measured alone, and the
GPU busy fraction (compute time / pipelined time). Needs a CUDA GPU, cuda-bindings and CuPy.

    python -m benchmarks.executor [--size 7680] [--tiles 8] [--compute-ms 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=7680)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--compute-ms", type=float, default=150.0, help="target stand-in compute per tile")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tseg.runtime.execution.cuda import device_count, device_properties

    if device_count() == 0:
        raise SystemExit("benchmarks.executor: no CUDA GPU here (cudaGetDeviceCount reports none); skipped")
    try:
        import cupy as cp
    except ImportError:
        raise SystemExit("benchmarks.executor: CuPy is not installed (the stand-in compute needs it); skipped") from None
    from tseg.runtime.execution.executor import CudaDeviceAPI, DoubleBufferedExecutor

    api = CudaDeviceAPI(0)
    h = w = args.size
    n_in, n_out = h * w * 3, h * w

    def wrap(ptr, n):
        return cp.ndarray((n,), cp.uint8, cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(int(ptr), n, None), 0))

    # Calibrate the number of passes so that one tile's compute takes about --compute-ms.
    x = cp.zeros(n_in, cp.uint8)
    y = cp.zeros(n_out, cp.uint8)
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y[...] = 255 - x.reshape(-1, 3)[:, 0]
    cp.cuda.Device().synchronize()
    per_pass = (time.perf_counter() - t0) / 10
    passes = max(1, int(args.compute_ms / 1000 / per_pass))
    del x, y

    def compute(slot, dev_in, dev_out, shape, stream):
        with cp.cuda.ExternalStream(int(stream)):
            xi = wrap(dev_in, n_in).reshape(-1, 3)
            yo = wrap(dev_out, n_out)
            for _ in range(passes):
                yo[...] = 255 - xi[:, 0]

    ex = DoubleBufferedExecutor(api, n_in, n_out, compute, lambda s: (s[0], 1, s[1], s[2]))
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) for _ in range(min(args.tiles, 3))]
    tiles = [tiles[i % len(tiles)] for i in range(args.tiles)]
    list(ex.run(enumerate(tiles[:2])))  # warm-up
    t0 = time.perf_counter()
    outs = list(ex.run(enumerate(tiles)))
    pipelined = (time.perf_counter() - t0) / len(tiles)
    ok = all(np.array_equal(o[0, 0], 255 - t[0, ..., 0]) for (_, o), t in zip(outs, tiles))
    t0 = time.perf_counter()
    for t in tiles:
        list(ex.run([(0, t)]))
    serial = (time.perf_counter() - t0) / len(tiles)
    # Compute alone.
    d_in = cp.asarray(tiles[0].reshape(-1))
    d_out = cp.zeros(n_out, cp.uint8)
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(passes):
        d_out[...] = 255 - d_in.reshape(-1, 3)[:, 0]
    cp.cuda.Device().synchronize()
    compute_alone = time.perf_counter() - t0
    ex.close()
    result = {
        "benchmark": "executor", "device": device_properties(0), "tile": [h, w],
        "bytes_in": n_in, "bytes_out": n_out, "tiles": len(tiles), "results_exact": ok,
        "stand_in_compute_s_per_tile": compute_alone, "pipelined_s_per_tile": pipelined,
        "serial_s_per_tile": serial, "ratio_pipelined_over_serial": pipelined / serial,
        "gpu_busy_fraction": compute_alone / pipelined,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
