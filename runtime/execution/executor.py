"""A double-buffered executor: copies to and from the device overlap the compute of other tiles.

Three streams (host-to-device copies, compute, device-to-host copies) and two slots, each with
a pinned host input buffer, a device input buffer, a device output buffer and a pinned host
output buffer. For tile k in slot s = k mod 2 the executor

1. stages the tile into the slot's pinned input (host memcpy), enqueues its H2D copy and records
   ``h2d_done[s]``;
2. makes the compute stream wait for ``h2d_done[s]``, enqueues the caller's compute (e.g. a
   TensorRT ``execute_async_v3``) and records ``compute_done[s]``;
3. makes the D2H stream wait for ``compute_done[s]``, enqueues the copy back, records ``d2h_done[s]``;
4. then waits (on the host) for tile k-1's ``d2h_done`` and hands its output out.

So tile k+1 is copied to the device, and tile k-1 back, while tile k computes; a slot is only
reused after its previous tile's D2H copy has completed, which orders every reuse of its
buffers after the work that read them. The scheduling talks to the device only through
:class:`DeviceAPI`; :class:`CudaDeviceAPI` implements it with NVIDIA's ``cuda-bindings`` (thin:
no logic of its own), and the tests drive the executor with a simulated device on the CPU.

Threads, errors and shutdown:

* the CUDA device is a per-thread setting: every :meth:`DoubleBufferedExecutor.run` makes its
  device current first (``cudaSetDevice``), so a backend built on one thread runs correctly when
  another thread calls it;
* when a run ends early (an exception part-way through an enqueue, or a caller that abandons the
  generator), every stream is synchronised before the run returns, so no copy or kernel is still
  reading or writing a slot's buffers when the next run reuses them;
* :meth:`~DoubleBufferedExecutor.close` synchronises all three streams before freeing anything.
"""

from __future__ import annotations

import ctypes
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from tseg.runtime.errors import BackendUnavailableError, DeviceError, TsegError

log = logging.getLogger(__name__)


class DeviceAPI(Protocol):
    def activate(self) -> None: ...
    def create_stream(self) -> Any: ...
    def create_event(self) -> Any: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def wait(self, stream: Any, event: Any) -> None: ...
    def synchronize(self, event: Any) -> None: ...
    def synchronize_stream(self, stream: Any) -> None: ...
    def alloc_device(self, nbytes: int) -> Any: ...
    def alloc_host(self, nbytes: int) -> np.ndarray: ...
    def copy_to_device(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None: ...
    def copy_to_host(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None: ...
    def free_device(self, ptr: Any) -> None: ...
    def free_host(self, buffer: np.ndarray) -> None: ...
    def destroy_stream(self, stream: Any) -> None: ...
    def destroy_event(self, event: Any) -> None: ...


#: ``compute(slot, device_in, device_out, input_shape, stream)`` enqueues work on ``stream``.
Compute = Callable[[int, Any, Any, tuple[int, ...], Any], None]


@dataclass
class _Slot:
    host_in: np.ndarray
    dev_in: Any
    dev_out: Any
    host_out: np.ndarray
    h2d_done: Any
    compute_done: Any
    d2h_done: Any


class DoubleBufferedExecutor:
    """Runs ``compute`` over a stream of uint8 arrays with copies overlapping compute."""

    def __init__(self, api: DeviceAPI, max_in_bytes: int, max_out_bytes: int, compute: Compute,
                 output_shape: Callable[[tuple[int, ...]], tuple[int, ...]], slots: int = 2) -> None:
        if slots < 2:
            raise ValueError("double buffering needs at least 2 slots")
        self.api = api
        self.compute = compute
        self.output_shape = output_shape
        self.max_in, self.max_out = int(max_in_bytes), int(max_out_bytes)
        self._closed = False
        made: list[tuple[Callable[[Any], None], Any]] = []  # what to release if construction fails

        def make(create: Callable[..., Any], release: Callable[[Any], None], *args: Any) -> Any:
            thing = create(*args)
            made.append((release, thing))
            return thing

        try:
            self.h2d_stream, self.compute_stream, self.d2h_stream = (
                make(api.create_stream, api.destroy_stream) for _ in range(3))
            self.slots = [
                _Slot(make(api.alloc_host, api.free_host, self.max_in),
                      make(api.alloc_device, api.free_device, self.max_in),
                      make(api.alloc_device, api.free_device, self.max_out),
                      make(api.alloc_host, api.free_host, self.max_out),
                      *(make(api.create_event, api.destroy_event) for _ in range(3)))
                for _ in range(slots)
            ]
        except BaseException:
            for release, thing in reversed(made):
                try:
                    release(thing)
                except Exception as exc:  # noqa: BLE001 - keep releasing; the first error propagates
                    log.error("could not release a CUDA resource: %s", exc)
            raise

    def _enqueue(self, slot: _Slot, index: int, array: np.ndarray) -> tuple[int, ...]:
        api = self.api
        if array.dtype != np.uint8:
            raise TsegError(f"the executor moves uint8 tiles, got {array.dtype}")
        n = array.nbytes
        out_shape = tuple(self.output_shape(array.shape))
        m = int(np.prod(out_shape))
        if n > self.max_in or m > self.max_out:
            raise TsegError(f"tile of {array.shape} exceeds the executor's buffers ({self.max_in} bytes in)")
        slot.host_in[:n] = array.reshape(-1)
        api.copy_to_device(slot.dev_in, slot.host_in, n, self.h2d_stream)
        api.record(slot.h2d_done, self.h2d_stream)
        api.wait(self.compute_stream, slot.h2d_done)
        self.compute(index, slot.dev_in, slot.dev_out, tuple(array.shape), self.compute_stream)
        api.record(slot.compute_done, self.compute_stream)
        api.wait(self.d2h_stream, slot.compute_done)
        api.copy_to_host(slot.host_out, slot.dev_out, m, self.d2h_stream)
        api.record(slot.d2h_done, self.d2h_stream)
        return out_shape

    def _collect(self, slot: _Slot, out_shape: tuple[int, ...]) -> np.ndarray:
        self.api.synchronize(slot.d2h_done)
        m = int(np.prod(out_shape))
        return slot.host_out[:m].copy().reshape(out_shape)

    @property
    def streams(self) -> tuple[Any, Any, Any]:
        return self.h2d_stream, self.compute_stream, self.d2h_stream

    def _drain(self) -> None:
        """Wait until every stream is idle. Errors are logged, not raised: this runs while another
        error (or a generator's close) is already propagating."""
        for stream in self.streams:
            try:
                self.api.synchronize_stream(stream)
            except Exception as exc:  # noqa: BLE001 - a faulted device reports on every call
                log.error("could not synchronise a CUDA stream while stopping: %s", exc)

    def run(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(key, output)`` for each ``(key, input)``, in order."""
        if self._closed:
            raise TsegError("the executor is closed")
        self.api.activate()
        in_flight: deque[tuple[Any, _Slot, tuple[int, ...]]] = deque()
        finished = False
        try:
            for k, (key, array) in enumerate(items):
                while len(in_flight) >= len(self.slots):
                    old_key, old_slot, old_shape = in_flight.popleft()
                    yield old_key, self._collect(old_slot, old_shape)
                slot = self.slots[k % len(self.slots)]
                in_flight.append((key, slot, self._enqueue(slot, k % len(self.slots), np.ascontiguousarray(array))))
                if len(in_flight) == len(self.slots):
                    old_key, old_slot, old_shape = in_flight.popleft()
                    yield old_key, self._collect(old_slot, old_shape)
            while in_flight:
                old_key, old_slot, old_shape = in_flight.popleft()
                yield old_key, self._collect(old_slot, old_shape)
            finished = True
        finally:
            if not finished:  # an error or an abandoned generator: nothing may stay in flight
                self._drain()

    def close(self) -> None:
        """Synchronise every stream, then free buffers, events and streams (idempotent)."""
        if self._closed:
            return
        self._closed = True
        api = self.api
        self._drain()
        for slot in self.slots:
            for free, buffer in ((api.free_host, slot.host_in), (api.free_host, slot.host_out),
                                 (api.free_device, slot.dev_in), (api.free_device, slot.dev_out),
                                 (api.destroy_event, slot.h2d_done), (api.destroy_event, slot.compute_done),
                                 (api.destroy_event, slot.d2h_done)):
                try:
                    free(buffer)
                except Exception as exc:  # noqa: BLE001 - free the rest even if one fails
                    log.error("could not release a CUDA resource: %s", exc)
        for stream in self.streams:
            try:
                api.destroy_stream(stream)
            except Exception as exc:  # noqa: BLE001
                log.error("could not destroy a CUDA stream: %s", exc)


# --- NVIDIA cuda-bindings ----------------------------------------------------------------------


class CudaError(DeviceError):
    """A CUDA runtime call failed (a kernel fault, out of memory, a lost device ...)."""


class CudaDeviceAPI:
    """:class:`DeviceAPI` on ``cuda.bindings.runtime`` (one device). Thin wrappers only."""

    def __init__(self, device: int = 0) -> None:
        from tseg.runtime.execution.cuda import cudart, no_device_reason

        rt = cudart()
        if rt is None:
            raise BackendUnavailableError("cuda-bindings is not installed: pip install 'tseg-rt[trt]'")
        reason = no_device_reason(device)
        if reason:
            raise BackendUnavailableError(f"CUDA device {device} cannot be used: {reason}")
        self.rt = rt
        self.device = device
        self._host: dict[int, int] = {}
        self.activate()

    def activate(self) -> None:
        """Make this device current on the calling thread (CUDA's current device is per thread)."""
        self._check(self.rt.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorString(err)
            raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest

    def create_stream(self) -> Any:
        return self._check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate")

    def create_event(self) -> Any:
        return self._check(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming), "cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def wait(self, stream: Any, event: Any) -> None:
        self._check(self.rt.cudaStreamWaitEvent(stream, event, 0), "cudaStreamWaitEvent")

    def synchronize(self, event: Any) -> None:
        self._check(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize")

    def synchronize_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def alloc_device(self, nbytes: int) -> Any:
        return self._check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})")

    def alloc_host(self, nbytes: int) -> np.ndarray:
        ptr = self._check(self.rt.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})")
        array = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(ptr)))
        self._host[array.__array_interface__["data"][0]] = ptr
        return array

    def copy_to_device(self, dst: Any, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync H2D")

    def copy_to_host(self, dst: np.ndarray, src: Any, nbytes: int, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync D2H")

    def free_device(self, ptr: Any) -> None:
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def free_host(self, buffer: np.ndarray) -> None:
        ptr = self._host.pop(buffer.__array_interface__["data"][0], None)
        if ptr is not None:
            self._check(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def destroy_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def destroy_event(self, event: Any) -> None:
        self._check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    # -- measuring (tseg-rt bench): not used by the executor itself --------------------------

    def create_timing_event(self) -> Any:
        """An event that records a time (the executor's own events disable timing, which is cheaper)."""
        return self._check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two completed timing events."""
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def memory_info(self) -> tuple[int, int]:
        """``(free, total)`` bytes of this device's memory (all processes' allocations count)."""
        free, total = self._check(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free), int(total)

    def copy_pageable(self, dst: Any, src: Any, nbytes: int, to_device: bool) -> None:
        """A synchronous copy to or from pageable (ordinary) host memory, given as an address:
        what a program without pinned buffers gets."""
        kind = self.rt.cudaMemcpyKind
        self._check(self.rt.cudaMemcpy(dst, src, nbytes, kind.cudaMemcpyHostToDevice if to_device
                                       else kind.cudaMemcpyDeviceToHost), "cudaMemcpy")
