"""The CUDA executor at the paper's tile size on a real GPU: overlap, bit-identity, pipelining gain.

7680 x 7680 tiles (177 MB in, 59 MB out) go through :class:`~tseg.runtime.execution.executor.
DoubleBufferedExecutor` on three real streams with pinned memory, and a stand-in compute of about
``compute_ms`` a tile (150 ms: an H100-class GPU's time for the paper's network) enqueued on the
compute stream: ``255 - red`` of each pixel, repeated, as CuPy kernels (CuPy must be installed:
``pip install cupy-cuda12x`` or ``cupy-cuda13x``; a TensorRT engine is checked by the engine rows
of :mod:`tseg.runtime.bench.check` instead). Checked:

* **overlap**: CUDA events recorded around every copy and compute on its own stream show tile
  k+1's host-to-device copy and tile k-1's device-to-host copy running while tile k computes;
* **bit-identity**: the pipelined outputs equal running each tile alone and the same computation
  in NumPy;
* **gain**: pipelined seconds per tile against one tile at a time, and the GPU's busy fraction
  (compute alone / pipelined time per tile).

:class:`TimedAPI` is the instrument, usable on any :class:`~tseg.runtime.execution.executor.
DeviceAPI` that can make timing events (the tests run it on a simulated device).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from tseg.runtime.errors import BackendUnavailableError


class TimedAPI:
    """A DeviceAPI wrapper that brackets every copy, and each compute run through :meth:`timed`,
    with events recorded on the operation's own stream, so that the device's clock says when each
    operation ran. ``new_event()`` makes a timing event, ``elapsed_ms(a, b)`` reads two."""

    def __init__(self, api: Any, new_event: Callable[[], Any], elapsed_ms: Callable[[Any, Any], float]) -> None:
        self.api, self.new_event, self.elapsed_ms = api, new_event, elapsed_ms
        self.marks: list[tuple[str, Any, Any]] = []  # (kind, start event, end event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def timed(self, kind: str, stream: Any, enqueue: Callable[[], None]) -> None:
        start, end = self.new_event(), self.new_event()
        self.api.record(start, stream)
        enqueue()
        self.api.record(end, stream)
        self.marks.append((kind, start, end))

    def copy_to_device(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self.timed("h2d", stream, lambda: self.api.copy_to_device(dst, src, nbytes, stream))

    def copy_to_host(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None:
        self.timed("d2h", stream, lambda: self.api.copy_to_host(dst, src, nbytes, stream))

    def spans(self) -> dict[str, list[tuple[float, float]]]:
        """``{kind: [(start_ms, end_ms), ...]}`` in enqueue order, relative to the first mark."""
        base = self.marks[0][1]
        out: dict[str, list[tuple[float, float]]] = {}
        for kind, start, end in self.marks:
            out.setdefault(kind, []).append((self.elapsed_ms(base, start), self.elapsed_ms(base, end)))
        return out

    def release(self) -> None:
        """Destroy the events made so far."""
        for _, start, end in self.marks:
            self.api.destroy_event(start)
            self.api.destroy_event(end)
        self.marks.clear()


def overlap_failures(spans: dict[str, list[tuple[float, float]]], n: int) -> list[str]:
    """Where tile k+1's H2D or tile k-1's D2H did not overlap tile k's compute (empty: all did)."""
    failures = []
    for k in range(1, n - 1):
        c_start, c_end = spans["compute"][k]
        h_start, h_end = spans["h2d"][k + 1]
        d_start, d_end = spans["d2h"][k - 1]
        if not (h_start < c_end and h_end > c_start):
            failures.append(f"H2D of tile {k + 1} did not overlap the compute of tile {k}")
        if not (d_start < c_end and d_end > c_start):
            failures.append(f"D2H of tile {k - 1} did not overlap the compute of tile {k}")
    return failures


def cupy_compute(n_in: int, n_out: int, compute_ms: float, device: int = 0) -> tuple[Callable[..., None], int]:
    """The stand-in compute (CuPy kernels on the executor's stream) and its passes per tile,
    calibrated to about ``compute_ms``."""
    try:
        import cupy as cp
    except Exception as exc:  # noqa: BLE001 - not installed, or no matching CUDA
        raise BackendUnavailableError(f"CuPy is not usable here ({exc}): the stand-in compute needs it "
                                      "(pip install cupy-cuda12x or cupy-cuda13x)") from None
    cp.cuda.Device(device).use()

    def wrap(ptr: Any, size: int) -> Any:
        return cp.ndarray((size,), cp.uint8, cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(int(ptr), size, None), 0))

    x, y = cp.zeros(n_in, cp.uint8), cp.zeros(n_out, cp.uint8)
    y[...] = 255 - x.reshape(-1, 3)[:, 0]
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        y[...] = 255 - x.reshape(-1, 3)[:, 0]
    cp.cuda.Device().synchronize()
    passes = max(1, int(compute_ms / 1000 / ((time.perf_counter() - t0) / 5)))
    del x, y

    def compute(slot: int, dev_in: Any, dev_out: Any, shape: tuple[int, ...], stream: Any) -> None:
        with cp.cuda.ExternalStream(int(stream)):
            xi, yo = wrap(dev_in, n_in).reshape(-1, 3), wrap(dev_out, n_out)
            for _ in range(passes):
                yo[...] = 255 - xi[:, 0]

    return compute, passes


def check_executor(side: int = 7680, tiles: int = 6, compute_ms: float = 150.0, device: int = 0,
                   api: Any = None, compute: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the check (module docstring). ``api``/``compute`` replace the CUDA device and the CuPy
    compute (the tests pass a simulated device)."""
    from tseg.runtime.execution.executor import DoubleBufferedExecutor

    n_in, n_out = side * side * 3, side * side
    if api is None:
        from tseg.runtime.execution.executor import CudaDeviceAPI

        api = CudaDeviceAPI(device)
    passes = None
    if compute is None:
        compute, passes = cupy_compute(n_in, n_out, compute_ms, device)
    timed = TimedAPI(api, api.create_timing_event, api.elapsed_ms)
    inner = compute

    def timed_compute(slot: int, dev_in: Any, dev_out: Any, shape: tuple[int, ...], stream: Any) -> None:
        timed.timed("compute", stream, lambda: inner(slot, dev_in, dev_out, shape, stream))

    rng = np.random.default_rng(0)
    distinct = [rng.integers(0, 256, (1, side, side, 3), dtype=np.uint8) for _ in range(min(tiles, 3))]
    inputs = [distinct[i % len(distinct)] for i in range(tiles)]
    ex = DoubleBufferedExecutor(timed, n_in, n_out, timed_compute, lambda s: (s[0], 1, s[1], s[2]))
    try:
        list(ex.run(enumerate(inputs[:2])))  # warm-up
        timed.release()
        t0 = time.perf_counter()
        pipelined = [out for _, out in ex.run(enumerate(inputs))]
        pipelined_s = (time.perf_counter() - t0) / tiles
        spans = timed.spans()
        timed.release()
        t0 = time.perf_counter()
        alone = [next(ex.run([(0, t)]))[1] for t in inputs]
        serial_s = (time.perf_counter() - t0) / tiles
        compute_ms_measured = float(np.median([e - s for s, e in spans["compute"]]))
        timed.release()
    finally:
        ex.close()
    failures = overlap_failures(spans, tiles)
    identical_alone = all(np.array_equal(a, b) for a, b in zip(pipelined, alone))
    identical_numpy = all(np.array_equal(a[0, 0], 255 - t[0, ..., 0]) for a, t in zip(pipelined, inputs))
    return {
        "tile": [side, side], "tiles": tiles, "bytes_in": n_in, "bytes_out": n_out,
        "stand_in": "CuPy kernels 255 - red" if passes is not None else "caller's compute",
        "stand_in_passes": passes, "compute_ms_per_tile": compute_ms_measured,
        "overlap_ok": not failures, "overlap_failures": failures,
        "identical_to_tile_alone": identical_alone, "identical_to_numpy": identical_numpy,
        "pipelined_s_per_tile": pipelined_s, "serial_s_per_tile": serial_s,
        "pipelined_over_serial": pipelined_s / serial_s if serial_s > 0 else None,
        "gpu_busy_fraction": (compute_ms_measured / 1000) / pipelined_s if pipelined_s > 0 else None,
        "ok": not failures and identical_alone and identical_numpy,
        "spans_ms": spans,
    }
