"""A ``cuda.bindings.runtime`` that makes every call to the REAL function, then simulates a GPU.

``CheckedCudaRuntime(real, sim, collector)`` stands in for NVIDIA's ``cuda.bindings.runtime``
(see :func:`install`). For each function the project calls it

1. checks the arguments against the real signature and the types its docstring lists
   (``stream : CUstream or cudaStream_t``, ``count : size_t``, ...);
2. calls the REAL function with the project's arguments: it converts them (so names and argument
   types are proved) and, with no usable driver, returns ``(cudaError_t, None...)`` without
   touching memory; the result must be a tuple starting with a ``cudaError_t``, and its length is
   the arity the project must unpack. The run refuses to go on if a real call succeeds (a device
   is visible): the driver process runs with ``CUDA_VISIBLE_DEVICES=""``;
3. returns what :class:`CudaSim` answers, a tuple of the same length with real types
   (``cudaStream_t``, ``cudaEvent_t``, ints for pointers, a real ``cudaDeviceProp``).

:class:`CudaSim` keeps the semantics of ``helpers.SimDevice`` (a virtual clock per stream, events
carrying times, data moved at enqueue time) with real handles and real host memory for pinned
buffers (the project wraps their addresses with ``ctypes``), and records as ``semantics``
violations: work enqueued on a stream of another device than the calling thread's current one
(TensorRT enqueues kernels in the current device's context); two operations that may run at the
same time on the same buffer, one of them writing; a buffer freed, or a pinned buffer refilled,
while an enqueued operation may still use it; copies from pageable memory (synchronous: no
overlap); unknown or destroyed handles; leaks (reported per scenario by :meth:`CudaSim.leaks`).
"""

from __future__ import annotations

import ctypes
import inspect
import re
import threading
import types
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np

from api_check import Collector
from helpers import D2H, H2D, SimDevice, SimEvent, SimStream

#: Functions that answer without a device (pure runtime queries): their real result is kept.
HOST_ONLY = {"cudaGetErrorString", "cudaGetErrorName", "cudaDriverGetVersion", "cudaRuntimeGetVersion"}
_C_INTS = {"int", "unsigned int", "size_t", "long", "unsigned long", "long long", "unsigned long long",
           "int64_t", "uint64_t", "unsigned"}
_MISSING = object()


@lru_cache(maxsize=None)
def _sections(doc: str) -> dict[str, list[tuple[str, str]]]:
    """``Parameters`` and ``Returns`` of a numpydoc docstring as (name, type) entries."""
    out: dict[str, list[tuple[str, str]]] = {}
    lines = (doc or "").splitlines()
    i = 0
    while i < len(lines) - 1:
        head = lines[i].strip()
        if head in ("Parameters", "Returns") and set(lines[i + 1].strip()) == {"-"}:
            # Sections are indented as their header (cudaMemcpy's docstring in 12.9 keeps its
            # indentation: a stray "\note_sync" line at column 0 stopped it being dedented).
            indent = len(lines[i]) - len(lines[i].lstrip())
            entries = []
            i += 2
            while i < len(lines):
                line = lines[i][indent:] if lines[i][:indent].isspace() else lines[i]
                if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
                    break  # the next section
                if line.strip() and not line.startswith((" ", "\t")):
                    name, sep, typ = line.partition(" : ")
                    entries.append((name.strip(), typ.strip()) if sep else ("", name.strip()))
                i += 1
            out[head] = entries
            continue
        i += 1
    return out


def _types(doc_type: str) -> list[str]:
    """``:py:obj:`~.CUstream` or :py:obj:`~.cudaStream_t``` -> ``["CUstream", "cudaStream_t"]``."""
    clean = re.sub(r":py:obj:`~?\.?([^`]*)`", r"\1", doc_type).replace("`", "")
    return [t.strip() for t in clean.split(" or ") if t.strip()]


class CheckedCudaRuntime(types.ModuleType):
    """The checking ``cuda.bindings.runtime`` (see the module docstring)."""

    def __init__(self, real: types.ModuleType, sim: "CudaSim", collector: Collector, version: str) -> None:
        super().__init__("cuda.bindings.runtime")
        self.__dict__.update(_real=real, _sim=sim, _col=collector, _version=version)
        from cuda.bindings import driver

        self.__dict__["_driver"] = driver

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)
        col = self._col
        col.exercised.add(name)
        real = getattr(self._real, name, _MISSING)
        if real is _MISSING:
            hint = "; the package version is cuda.bindings.__version__" if name == "__version__" else ""
            col.add("missing", f"cuda.bindings.runtime.{name}", f"does not exist in cuda-bindings {self._version}{hint}")
            raise AttributeError(f"cuda-bindings {self._version}: cuda.bindings.runtime has no {name}")
        if isinstance(real, type) or not callable(real):
            return real  # classes, enums and constants: the real ones
        return _CheckedCall(self, name, real)

    def _resolve(self, name: str) -> Any:
        for module in (self._real, self._driver):
            obj = getattr(module, name, None)
            if isinstance(obj, type):
                return obj
        return None

    def check_value(self, value: Any, doc_type: str) -> str | None:
        """Why ``value`` is not what the docstring type says (None: it is)."""
        names = _types(doc_type)
        if not names or "Any" in names:
            return None
        reasons = []
        for t in names:
            if t in _C_INTS or t == "int":
                if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                    return None
                reasons.append(f"{type(value).__name__} where an integer ({t}) is expected")
            elif t in ("bytes", "str", "float", "bool"):
                if type(value).__name__ == t:
                    return None
                reasons.append(f"{type(value).__name__} where {t} is expected")
            else:
                cls = self._resolve(t)
                if cls is None:
                    reasons.append(f"the checker does not know the type {t!r} (extend tests/checked_cudart.py)")
                elif isinstance(value, cls):
                    return None
                else:
                    reasons.append(f"{type(value).__name__} where {t} is expected")
        return " or ".join(reasons)


class _CheckedCall:
    def __init__(self, rt: CheckedCudaRuntime, name: str, real: Any) -> None:
        self.rt, self.name, self.real = rt, name, real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rt, name, real = self.rt, self.name, self.real
        col, api = rt._col, f"cuda.bindings.runtime.{name}"
        doc = _sections(real.__doc__ or "")
        documented = dict(doc.get("Parameters", []))
        try:
            bound = inspect.signature(real).bind(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            col.add("signature", api, f"the arguments do not bind to {name}{inspect.signature(real)}: {exc}")
        else:
            for pname, value in bound.arguments.items():
                if pname not in documented:
                    col.add("checker", api, f"parameter {pname!r} is not documented")
                    continue
                why = rt.check_value(value, documented[pname])
                if why:
                    col.add("signature", api, f"{pname}={value!r:.50}: {why}")
        real_result: Any = None
        try:
            real_result = real(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any refusal by the real function is the finding
            col.add("signature", api, f"the real function refused the arguments: {type(exc).__name__}: {exc}")
        else:
            if not (isinstance(real_result, tuple) and real_result and isinstance(real_result[0], rt._real.cudaError_t)):
                col.add("checker", api, f"the real result {real_result!r:.60} is not a tuple starting with a cudaError_t")
                real_result = None
            elif int(real_result[0]) == 0 and name not in HOST_ONLY:
                raise RuntimeError(f"the real {name} succeeded: a CUDA device is visible, and these checks must run "
                                   "where every device call fails (CUDA_VISIBLE_DEVICES='')")
        returns = doc.get("Returns", [])
        if real_result is not None and returns and len(returns) != len(real_result):
            col.add("checker", api, f"the docstring lists {len(returns)} results, the real function returns "
                                    f"{len(real_result)}")
        impl = getattr(rt._sim, name, None)
        if impl is None:
            col.add("checker", api, "the simulated device does not implement it (extend tests/checked_cudart.py)")
            return real_result
        out = impl(*args, **kwargs)
        if name in HOST_ONLY and out is None:
            out = real_result
        if not (isinstance(out, tuple) and out and isinstance(out[0], rt._real.cudaError_t)):
            col.add("checker", api, f"the simulator returned {out!r:.60}")
        elif real_result is not None and len(out) != len(real_result):
            col.add("checker", api, f"the simulator returned {len(out)} results, the real function {len(real_result)}")
        elif int(out[0]) == 0:
            for value, (rname, rtype) in zip(out[1:], returns[1:]):
                why = rt.check_value(value, rtype)
                if why:
                    col.add("checker", api, f"the simulator's {rname or 'result'}: {why}")
        return out


def install(checked: CheckedCudaRuntime) -> None:
    """Make ``from cuda.bindings import runtime`` give ``checked`` (what tseg.runtime.execution.cuda does)."""
    import sys

    import cuda.bindings

    sys.modules["cuda.bindings.runtime"] = checked
    cuda.bindings.runtime = checked


# --- the simulated device ---------------------------------------------------------------------


class SimCudaStream(SimStream):
    def __init__(self, handle: int, device: int) -> None:
        super().__init__(f"stream {handle:#x}")
        self.handle, self.device, self.alive = handle, device, True

    def __int__(self) -> int:  # TensorRT receives streams as integer handles
        return self.handle


class SimCudaEvent(SimEvent):
    def __init__(self, handle: int, device: int) -> None:
        super().__init__()
        self.handle, self.device, self.alive = handle, device, True
        self.timing, self.recorded = True, False


H200 = {"name": "NVIDIA H200", "major": 9, "minor": 0, "total": 141 << 30}


class CudaSim(SimDevice):
    """A GPU on the CPU: real handle types, real host memory, SimDevice's clock (module docstring).

    ``devices``: property dicts (name, major, minor, total). ``driver_version``: what
    ``cudaDriverGetVersion`` reports; ``insufficient_driver``: every device call fails with
    ``cudaErrorInsufficientDriver`` (35), as with a driver older than the runtime needs.
    :meth:`fail` makes the n-th call of a function fail with ``cudaErrorLaunchFailure``."""

    def __init__(self, rt: types.ModuleType, collector: Collector, devices: tuple[dict, ...] = (H200,),
                 driver_version: int | None = None, insufficient_driver: bool = False) -> None:
        super().__init__()
        self.rt, self.col = rt, collector
        self.devices = list(devices)
        self.runtime_version = int(rt.cudaRuntimeGetVersion()[1])
        self.driver_version = self.runtime_version if driver_version is None else driver_version
        self.insufficient_driver = insufficient_driver
        self._local = threading.local()
        self._next = 0x7F00_0000_0000  # stream and event handles
        self._next_pointer = 0x7000_0000_0000  # device memory
        self.stream_by_handle: dict[int, SimCudaStream] = {}
        self.event_by_handle: dict[int, SimCudaEvent] = {}
        self.device_alloc: dict[int, tuple[int, int]] = {}  # pointer -> (bytes, device)
        self.pinned: dict[int, Any] = {}  # address -> ctypes buffer
        self.graveyard: list[Any] = []  # freed pinned buffers stay mapped: a use after free is reported, not a crash
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, set[int]] = {}
        self.set_device_threads: list[tuple[int, int]] = []  # (thread id, device) per cudaSetDevice

    # -- helpers --------------------------------------------------------------------------------

    def fail(self, name: str, nth: int) -> None:
        """The ``nth`` call (1-based) of ``name`` (e.g. ``cudaMemcpyAsync:DeviceToHost``) fails."""
        self._faults.setdefault(name, set()).add(nth)

    def _code(self, name: str) -> Any:
        return getattr(self.rt.cudaError_t, name)

    def _ok(self, *outs: Any) -> tuple:
        return (self._code("cudaSuccess"), *outs)

    def _err(self, code: str, n_out: int, why: str | None = None, api: str = "") -> tuple:
        if why:
            self.col.add("semantics", api, why)
        return (self._code(code), *([None] * n_out))

    def _enter(self, name: str, n_out: int, key: str | None = None) -> tuple | None:
        """Count the call; the error answer when the driver is too old or a fault is due."""
        self.calls[name] += 1
        if key:
            self.calls[key] += 1
        if self.insufficient_driver:
            return self._err("cudaErrorInsufficientDriver", n_out)
        for k in (name, key):
            if k and self.calls[k] in self._faults.get(k, ()):
                return self._err("cudaErrorLaunchFailure", n_out)
        return None

    def _new_handle(self) -> int:
        self._next += 0x1000
        return self._next

    @property
    def current_device(self) -> int:
        return getattr(self._local, "device", 0)  # CUDA: a new host thread starts on device 0

    def _stream(self, stream: Any, api: str) -> SimCudaStream | None:
        s = self.stream_by_handle.get(int(stream)) if stream is not None else None
        if s is None or not s.alive:
            self.col.add("semantics", api, f"stream {stream!r} is {'destroyed' if s else 'unknown'}")
            return None
        return s

    def _event(self, event: Any, api: str) -> SimCudaEvent | None:
        e = self.event_by_handle.get(int(event)) if event is not None else None
        if e is None or not e.alive:
            self.col.add("semantics", api, f"event {event!r} is {'destroyed' if e else 'unknown'}")
            return None
        return e

    def _device_buffer(self, ptr: Any, n: int, api: str) -> tuple[int, int] | None:
        p = int(ptr)
        for base, (size, _) in self.device_alloc.items():
            if base <= p and p + n <= base + size:
                return base, p - base
        self.col.add("semantics", api, f"{n} bytes at device pointer {p:#x} are not inside a live allocation")
        return None

    def _pinned_buffer(self, addr: int, n: int) -> int | None:
        for base, buf in self.pinned.items():
            if base <= addr and addr + n <= base + ctypes.sizeof(buf):
                return base
        return None

    def _in_use(self, key: int, api: str, what: str) -> None:
        for kind, _tile, start, end, reads, writes in self.ops:
            if key in reads | writes and end > self.host:
                self.col.add("semantics", api, f"{what} while a {kind} enqueued at t={start} may still use it "
                                               f"(until t={end}; the host has waited until t={self.host})")
                return

    def _op(self, kind: str, stream: Any, duration: float, reads: set, writes: set, tile: Any = None) -> None:
        """Every enqueued operation (copies here, TensorRT's compute in the stand-in engine)."""
        api = f"enqueue {kind}"
        if isinstance(stream, SimCudaStream):
            if not stream.alive:
                self.col.add("semantics", api, f"on destroyed {stream.name}")
            if stream.device != self.current_device:
                self.col.add("semantics", api, f"on {stream.name} of device {stream.device} from a thread whose current "
                                               f"device is {self.current_device} (cudaSetDevice first)")
        start = max(stream.ready, self.host)
        end = start + duration
        for k2, _t, s2, e2, r2, w2 in self.ops:
            if s2 < end and start < e2 and (writes & (r2 | w2) or reads & w2):
                shared = sorted(map(hex, (writes & (r2 | w2)) | (reads & w2)))
                self.col.add("semantics", api, f"races with {k2} over buffer(s) {shared}: [{start}, {end}] overlaps "
                                               f"[{s2}, {e2}]")
                break
        stream.ready = end
        self.ops.append((kind, tile, start, end, reads, writes))

    def leaks(self) -> dict[str, int]:
        return {"device_buffers": len(self.device_alloc), "pinned_buffers": len(self.pinned),
                "streams": sum(s.alive for s in self.stream_by_handle.values()),
                "events": sum(e.alive for e in self.event_by_handle.values())}

    # -- the runtime API (names and results as in cuda.bindings.runtime) -------------------------

    def cudaGetDeviceCount(self):  # noqa: N802 - CUDA's names
        return self._enter("cudaGetDeviceCount", 1) or self._ok(len(self.devices))

    def cudaDriverGetVersion(self):  # noqa: N802
        self.calls["cudaDriverGetVersion"] += 1
        return self._ok(self.driver_version)

    def cudaRuntimeGetVersion(self):  # noqa: N802
        self.calls["cudaRuntimeGetVersion"] += 1
        return None  # the real answer (this runtime's version)

    def cudaGetErrorString(self, error):  # noqa: N802
        return None

    def cudaGetErrorName(self, error):  # noqa: N802
        return None

    def cudaSetDevice(self, device):  # noqa: N802
        err = self._enter("cudaSetDevice", 0)
        if err:
            return err
        if not 0 <= int(device) < len(self.devices):
            return self._err("cudaErrorInvalidDevice", 0)
        self._local.device = int(device)
        self.set_device_threads.append((threading.get_ident(), int(device)))
        return self._ok()

    def cudaGetDevice(self):  # noqa: N802
        return self._enter("cudaGetDevice", 1) or self._ok(self.current_device)

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        err = self._enter("cudaGetDeviceProperties", 1)
        if err:
            return err
        if not 0 <= int(device) < len(self.devices):
            return self._err("cudaErrorInvalidDevice", 1)
        d = self.devices[int(device)]
        prop = self.rt.cudaDeviceProp()
        prop.name = d["name"].encode().ljust(256, b"\0")
        prop.major, prop.minor, prop.totalGlobalMem = d["major"], d["minor"], d["total"]
        return self._ok(prop)

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        err = self._enter("cudaStreamCreateWithFlags", 1)
        if err:
            return err
        s = SimCudaStream(self._new_handle(), self.current_device)
        self.stream_by_handle[s.handle] = s
        self.streams.append(s)
        return self._ok(self.rt.cudaStream_t(s.handle))

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaStreamCreateWithFlags(0)

    def cudaEventCreateWithFlags(self, flags):  # noqa: N802
        err = self._enter("cudaEventCreateWithFlags", 1)
        if err:
            return err
        e = SimCudaEvent(self._new_handle(), self.current_device)
        e.timing = not (int(flags) & int(self.rt.cudaEventDisableTiming))
        self.event_by_handle[e.handle] = e
        return self._ok(self.rt.cudaEvent_t(e.handle))

    def cudaEventCreate(self):  # noqa: N802
        return self.cudaEventCreateWithFlags(0)

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        """Milliseconds between two recorded, completed timing events (one virtual time unit = 1 ms)."""
        api = "cudaEventElapsedTime"
        err = self._enter(api, 1)
        if err:
            return err
        a, b = self._event(start, api), self._event(end, api)
        if a is None or b is None:
            return self._err("cudaErrorInvalidResourceHandle", 1)
        if not (a.timing and b.timing):
            return self._err("cudaErrorInvalidResourceHandle", 1, "an event created with cudaEventDisableTiming "
                                                                   "has no time", api)
        if not (a.recorded and b.recorded):
            return self._err("cudaErrorInvalidResourceHandle", 1, "an event that was never recorded", api)
        if max(a.time, b.time) > self.host:
            return self._err("cudaErrorNotReady", 1)
        return self._ok(float(b.time - a.time))

    def cudaMemcpy(self, dst, src, count, kind):  # noqa: N802
        """A synchronous copy (pageable host memory is fine): the host waits for it."""
        rt = self.rt
        api = "cudaMemcpy"
        direction = getattr(kind, "name", str(kind)).replace("cudaMemcpy", "")
        err = self._enter(api, 0, f"{api}:{direction}")
        if err:
            return err
        n = int(count)
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            found, duration = self._device_buffer(dst, n, api), H2D
            if found is None:
                return self._err("cudaErrorInvalidValue", 0)
            base, off = found
            self.memory[base][off : off + n] = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(int(src)))
            reads, writes = {int(src)}, {base}
        elif kind == rt.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            found, duration = self._device_buffer(src, n, api), D2H
            if found is None:
                return self._err("cudaErrorInvalidValue", 0)
            base, off = found
            ctypes.memmove(int(dst), self.memory[base][off:].ctypes.data, n)
            reads, writes = {base}, {int(dst)}
        else:
            self.col.add("checker", api, f"the simulator does not copy {kind!r}")
            return self._err("cudaErrorInvalidMemcpyDirection", 0)
        start = self.host
        self.host += duration
        self.ops.append((f"sync-{direction}", None, start, self.host, reads, writes))
        return self._ok()

    def cudaEventRecord(self, event, stream):  # noqa: N802
        api = "cudaEventRecord"
        err = self._enter(api, 0)
        if err:
            return err
        e, s = self._event(event, api), self._stream(stream, api)
        if e is None or s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        if e.device != s.device:
            return self._err("cudaErrorInvalidResourceHandle", 0,
                             f"event of device {e.device}, stream of device {s.device}", api)
        if s.device != self.current_device:
            self.col.add("semantics", api, f"on a stream of device {s.device} from a thread whose current device is "
                                           f"{self.current_device}")
        e.time = s.ready
        e.recorded = True
        return self._ok()

    def cudaStreamWaitEvent(self, stream, event, flags=0):  # noqa: N802
        api = "cudaStreamWaitEvent"
        err = self._enter(api, 0)
        if err:
            return err
        s, e = self._stream(stream, api), self._event(event, api)
        if e is None or s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        s.ready = max(s.ready, e.time)
        return self._ok()

    def cudaEventSynchronize(self, event):  # noqa: N802
        api = "cudaEventSynchronize"
        err = self._enter(api, 0)
        if err:
            return err
        e = self._event(event, api)
        if e is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        self.host = max(self.host, e.time)
        return self._ok()

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        api = "cudaStreamSynchronize"
        err = self._enter(api, 0)
        if err:
            return err
        s = self._stream(stream, api)
        if s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        self.host = max(self.host, s.ready)
        return self._ok()

    def cudaDeviceSynchronize(self):  # noqa: N802
        err = self._enter("cudaDeviceSynchronize", 0)
        if err:
            return err
        for s in self.stream_by_handle.values():
            if s.device == self.current_device:
                self.host = max(self.host, s.ready)
        return self._ok()

    def cudaStreamQuery(self, stream):  # noqa: N802
        api = "cudaStreamQuery"
        err = self._enter(api, 0)
        if err:
            return err
        s = self._stream(stream, api)
        if s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        return self._ok() if s.ready <= self.host else self._err("cudaErrorNotReady", 0)

    def cudaEventQuery(self, event):  # noqa: N802
        api = "cudaEventQuery"
        err = self._enter(api, 0)
        if err:
            return err
        e = self._event(event, api)
        if e is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        return self._ok() if e.time <= self.host else self._err("cudaErrorNotReady", 0)

    def cudaMemGetInfo(self):  # noqa: N802
        err = self._enter("cudaMemGetInfo", 2)
        if err:
            return err
        total = self.devices[self.current_device]["total"]
        used = sum(n for n, d in self.device_alloc.values() if d == self.current_device)
        return self._ok(total - used, total)

    def cudaMalloc(self, size):  # noqa: N802
        err = self._enter("cudaMalloc", 1)
        if err:
            return err
        ptr = self._next_pointer
        self._next_pointer += (int(size) + 0xFFFF) // 0x10000 * 0x10000 + 0x10000  # 64 KiB-aligned, with a gap
        self.device_alloc[ptr] = (int(size), self.current_device)
        self.memory[ptr] = np.zeros(int(size), np.uint8)
        return self._ok(ptr)

    def cudaMallocHost(self, size):  # noqa: N802
        err = self._enter("cudaMallocHost", 1)
        if err:
            return err
        buf = (ctypes.c_uint8 * max(int(size), 1))()
        addr = ctypes.addressof(buf)
        self.pinned[addr] = buf
        return self._ok(addr)

    def cudaFree(self, devPtr):  # noqa: N802, N803 - CUDA's names
        api = "cudaFree"
        err = self._enter(api, 0)
        if err:
            return err
        p = int(devPtr)
        if p not in self.device_alloc:
            return self._err("cudaErrorInvalidValue", 0, f"{p:#x} is not a live device allocation", api)
        self._in_use(p, api, f"device buffer {p:#x} freed")
        del self.device_alloc[p], self.memory[p]
        return self._ok()

    def cudaFreeHost(self, ptr):  # noqa: N802
        api = "cudaFreeHost"
        err = self._enter(api, 0)
        if err:
            return err
        p = int(ptr)
        if p not in self.pinned:
            return self._err("cudaErrorInvalidValue", 0, f"{p:#x} is not a live pinned allocation", api)
        self._in_use(p, api, f"pinned buffer {p:#x} freed")
        self.graveyard.append(self.pinned.pop(p))
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        rt = self.rt
        api = "cudaMemcpyAsync"
        direction = getattr(kind, "name", str(kind)).replace("cudaMemcpy", "")
        err = self._enter(api, 0, f"{api}:{direction}")
        if err:
            return err
        s = self._stream(stream, api)
        n = int(count)
        if s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            found = self._device_buffer(dst, n, api)
            host = self._pinned_buffer(int(src), n)
            if found is None:
                return self._err("cudaErrorInvalidValue", 0)
            if host is None:
                self.col.add("semantics", api, f"host to device from pageable memory at {int(src):#x}: the copy is "
                                               "synchronous and cannot overlap compute (use cudaMallocHost buffers)")
            else:
                self._in_use_host(host, api)
            base, off = found
            self.memory[base][off : off + n] = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(int(src)))
            self._op("h2d", s, H2D, {host or int(src)}, {base})
        elif kind == rt.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            found = self._device_buffer(src, n, api)
            host = self._pinned_buffer(int(dst), n)
            if found is None:
                return self._err("cudaErrorInvalidValue", 0)
            if host is None:
                self.col.add("semantics", api, f"device to host into pageable memory at {int(dst):#x}: the copy is "
                                               "synchronous and cannot overlap compute (use cudaMallocHost buffers)")
            base, off = found
            ctypes.memmove(int(dst), self.memory[base][off:].ctypes.data, n)
            self._op("d2h", s, D2H, {base}, {host or int(dst)})
        else:
            self.col.add("checker", api, f"the simulator does not copy {kind!r}")
            return self._err("cudaErrorInvalidMemcpyDirection", 0)
        return self._ok()

    def _in_use_host(self, host: int, api: str) -> None:
        """The host refilled ``host`` (a pinned input) before this copy: nothing may still read it."""
        for kind, _t, start, end, reads, _w in self.ops:
            if host in reads and end > self.host:
                self.col.add("semantics", api, f"pinned buffer {host:#x} refilled by the host at t={self.host} while a "
                                               f"{kind} from it may still run (until t={end})")
                return

    def cudaStreamDestroy(self, stream):  # noqa: N802
        api = "cudaStreamDestroy"
        err = self._enter(api, 0)
        if err:
            return err
        s = self._stream(stream, api)
        if s is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        s.alive = False
        return self._ok()

    def cudaEventDestroy(self, event):  # noqa: N802
        api = "cudaEventDestroy"
        err = self._enter(api, 0)
        if err:
            return err
        e = self._event(event, api)
        if e is None:
            return self._err("cudaErrorInvalidResourceHandle", 0)
        e.alive = False
        return self._ok()

    def kernel_255_minus_red(self, stream: Any, dev_in: Any, dev_out: Any, shape: tuple[int, ...]) -> None:
        """A stand-in compute on the device (what a TensorRT engine or a CuPy kernel would enqueue)."""
        s = self.stream_by_handle[int(stream)]
        n, h, w, _ = shape
        x = self.memory[int(dev_in)][: n * h * w * 3].reshape(n, h, w, 3)
        self.memory[int(dev_out)][: n * h * w] = (255 - x[..., 0]).ravel()
        self._op("compute", s, 4.0, {int(dev_in)}, {int(dev_out)})
