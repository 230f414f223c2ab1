"""CUDA device detection, and why there is no usable device (the executor lives in
:mod:`tseg.runtime.execution.executor`).

Uses NVIDIA's ``cuda-bindings`` when installed. ``cudaGetDeviceCount`` does not raise without a
GPU: it returns an error code, and the codes mean different things to a user:

* ``cudaErrorInsufficientDriver`` (35) with ``cudaDriverGetVersion`` = 0: no NVIDIA driver at all
  (a CPU machine);
* 35 with a driver version: the driver is older than the CUDA runtime that the installed
  ``cuda-bindings`` is built for (e.g. cuda-bindings 13 on a CUDA 12 driver) — the fix is a newer
  driver or the CUDA 12 packages;
* ``cudaErrorNoDevice`` (100): a driver, but no GPU visible (``CUDA_VISIBLE_DEVICES``, containers).

:func:`cuda_status` reports which, with the fix; :func:`device_count` stays the simple question.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

INSUFFICIENT_DRIVER = 35
NO_DEVICE = 100

#: Oldest Linux driver for each CUDA major version's runtime (CUDA release notes, "minor version
#: compatibility": 12.x needs >= 525.60.13, 13.x needs >= 580.65.06).
MIN_LINUX_DRIVER = {12: "525.60.13", 13: "580.65.06"}


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module, or None when ``cuda-bindings`` is not installed."""
    try:
        from cuda.bindings import runtime
    except Exception:  # not installed, or a broken install: treat as no CUDA
        return None
    return runtime


def bindings_version() -> str | None:
    """``cuda.bindings.__version__`` (the runtime submodule has no version of its own)."""
    try:
        import cuda.bindings as bindings
    except Exception:
        return None
    return getattr(bindings, "__version__", None)


def _cuda_version_text(version: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor (12080 -> "12.8")."""
    return f"{version // 1000}.{(version % 1000) // 10}"


@dataclass(frozen=True)
class CudaStatus:
    """How many devices, and if none, why (``reason``) and what to do about it."""

    count: int
    reason: str | None = None
    error: int = 0
    driver_version: int | None = None
    runtime_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.count > 0


def _int_result(call: Any) -> int | None:
    try:
        err, value = call()
    except Exception:  # noqa: BLE001 - diagnostics only
        return None
    return int(value) if int(err) == 0 and value is not None else None


def cuda_status() -> CudaStatus:
    """The number of usable CUDA devices, with the reason when there is none."""
    rt = cudart()
    if rt is None:
        return CudaStatus(0, "cuda-bindings is not installed: pip install 'tseg-rt[trt]' (CUDA 13 drivers) or "
                             "'tseg-rt[trt-cu12]' (CUDA 12 drivers)")
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # pragma: no cover - a broken install
        return CudaStatus(0, f"cudaGetDeviceCount raised {exc!r}")
    code = int(err)
    if code == 0 and count:
        return CudaStatus(int(count))
    driver = _int_result(rt.cudaDriverGetVersion)
    runtime = _int_result(rt.cudaRuntimeGetVersion)
    if code == 0:
        reason = "the NVIDIA driver reports no CUDA GPU"
    elif code == INSUFFICIENT_DRIVER and not driver:
        reason = "no NVIDIA driver is installed or loaded (no GPU on this machine?)"
    elif code == INSUFFICIENT_DRIVER:
        needs = _cuda_version_text(runtime) if runtime else "?"
        major = runtime // 1000 if runtime else None
        floor = MIN_LINUX_DRIVER.get(major or 0)
        reason = (f"the NVIDIA driver is too old: it supports CUDA up to {_cuda_version_text(driver)}, but "
                  f"cuda-bindings {bindings_version()} needs CUDA {needs}"
                  + (f" (a Linux driver >= {floor})" if floor else "")
                  + ". Update the driver, or use the CUDA 12 packages: pip install 'tseg-rt[trt-cu12]'")
    elif code == NO_DEVICE:
        reason = "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the container's GPU access)"
    else:
        reason = f"cudaGetDeviceCount failed: {_error_name(rt, err)}"
    return CudaStatus(0, reason, code, driver, runtime)


def _error_name(rt: Any, err: Any) -> str:
    try:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
    except Exception:  # noqa: BLE001
        return f"error {int(err)}"
    decode = (lambda b: b.decode(errors="replace") if isinstance(b, (bytes, bytearray)) else str(b))  # noqa: E731
    return f"{decode(name)} ({decode(text)})"


def device_count() -> int:
    """Number of usable CUDA devices (0 when there is no driver, GPU or ``cuda-bindings``)."""
    return cuda_status().count


def no_device_reason(device: int = 0) -> str:
    """Why CUDA device ``device`` cannot be used, in one sentence (for error messages)."""
    count = device_count()
    if count > device:
        return ""
    if count:
        return f"there is no CUDA device {device} (this machine has {count})"
    return cuda_status().reason or "no CUDA GPU"


def device_properties(device: int = 0) -> dict[str, Any]:
    """Name, compute capability and memory of a device (empty dict without CUDA)."""
    rt = cudart()
    if rt is None or device_count() <= device:
        return {}
    err, props = rt.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return {}
    name = props.name
    name = name.decode(errors="replace").rstrip("\x00") if isinstance(name, (bytes, bytearray)) else str(name)
    err_d, driver = rt.cudaDriverGetVersion()
    err_r, runtime_version = rt.cudaRuntimeGetVersion()
    return {
        "name": name,
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory_bytes": int(props.totalGlobalMem),
        "driver_version": int(driver) if int(err_d) == 0 else None,
        "runtime_version": int(runtime_version) if int(err_r) == 0 else None,
    }
