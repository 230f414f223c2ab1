"""Host <-> device copy rates and device memory, measured through ``cuda-bindings``.

The rates say whether moving tiles can keep up with the network: a 7680² uint8 tile is 177 MB in
and 59 MB out, so at 25 GB/s (pinned memory on PCIe 5) its copies take ~9 ms against the
~150 ms an H100-class GPU needs for the paper's network, and the executor hides them behind the
compute (:mod:`tseg.runtime.execution.executor`). Four rates, each the best and the median of
``repeats`` copies of ``nbytes`` after one unmeasured copy:

* ``pinned_h2d`` / ``pinned_d2h``: page-locked host buffers (``cudaMallocHost``), asynchronous
  copies on a stream, timed to the stream's completion: what tseg-rt's executor uses;
* ``pageable_h2d`` / ``pageable_d2h``: ordinary host memory with synchronous ``cudaMemcpy``: what
  a program without pinned buffers gets (the driver stages it through its own pinned memory).

GB/s are 10^9 bytes per second.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from tseg.runtime.errors import BackendUnavailableError


def cuda_api(device: int = 0) -> Any:
    """A :class:`~tseg.runtime.execution.executor.CudaDeviceAPI` for ``device``, or raise
    :class:`~tseg.runtime.errors.BackendUnavailableError` with the reason there is none."""
    from tseg.runtime.execution.executor import CudaDeviceAPI

    return CudaDeviceAPI(device)


def device_memory(device: int = 0) -> dict[str, int] | None:
    """Free and total memory of ``device`` in bytes, or None without CUDA."""
    try:
        api = cuda_api(device)
    except BackendUnavailableError:
        return None
    free, total = api.memory_info()
    return {"free_bytes": free, "total_bytes": total, "used_bytes": total - free}


def _rate(copy: Callable[[], None], nbytes: int, repeats: int) -> dict[str, float]:
    copy()  # first use: page mapping, driver staging buffers
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        copy()
        seconds.append(time.perf_counter() - t0)
    best, median = min(seconds), statistics.median(seconds)
    return {"gb_per_s_best": nbytes / max(best, 1e-9) / 1e9, "gb_per_s_median": nbytes / max(median, 1e-9) / 1e9,
            "seconds_median": median}


def copy_rates(device: int = 0, nbytes: int = 7680 * 7680 * 3, repeats: int = 5) -> dict[str, Any]:
    """The four copy rates of the module docstring for ``nbytes`` (default: one 7680² RGB tile)."""
    api = cuda_api(device)
    stream = api.create_stream()
    made: list[tuple[Callable[[Any], None], Any]] = [(api.destroy_stream, stream)]
    try:
        dev = api.alloc_device(nbytes)
        made.append((api.free_device, dev))
        pinned = api.alloc_host(nbytes)
        made.append((api.free_host, pinned))
        pinned[:] = 7
        pageable = np.full(nbytes, 7, np.uint8)  # written, so its pages exist

        def pinned_copy(to_device: bool) -> Callable[[], None]:
            def run() -> None:
                if to_device:
                    api.copy_to_device(dev, pinned, nbytes, stream)
                else:
                    api.copy_to_host(pinned, dev, nbytes, stream)
                api.synchronize_stream(stream)
            return run

        def pageable_copy(to_device: bool) -> Callable[[], None]:
            address = pageable.ctypes.data
            return lambda: api.copy_pageable(dev, address, nbytes, True) if to_device else \
                api.copy_pageable(address, dev, nbytes, False)

        return {"bytes": nbytes, "repeats": repeats,
                "pinned_h2d": _rate(pinned_copy(True), nbytes, repeats),
                "pinned_d2h": _rate(pinned_copy(False), nbytes, repeats),
                "pageable_h2d": _rate(pageable_copy(True), nbytes, repeats),
                "pageable_d2h": _rate(pageable_copy(False), nbytes, repeats)}
    finally:
        for release, thing in reversed(made):
            release(thing)
