"""CUDA device detection (the executor for CUDA streams lives in :mod:`tseg.runtime.executor`).

Uses NVIDIA's ``cuda-bindings`` when installed. Without a GPU,
``cudaGetDeviceCount`` returns ``cudaErrorInsufficientDriver`` (or ``NoDevice``) instead of
raising; both mean zero devices.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module, or None when ``cuda-bindings`` is not installed."""
    try:
        from cuda.bindings import runtime
    except Exception:  # not installed, or a broken install: treat as no CUDA
        return None
    return runtime


def device_count() -> int:
    """Number of usable CUDA devices (0 when there is no driver, GPU or ``cuda-bindings``)."""
    rt = cudart()
    if rt is None:
        return 0
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # pragma: no cover - defensive
        log.debug("cudaGetDeviceCount raised %r", exc)
        return 0
    return int(count) if int(err) == 0 else 0


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
