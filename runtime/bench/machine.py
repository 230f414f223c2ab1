"""The machine a benchmark ran on: CPU, memory, GPU, driver, CUDA and library versions.

Everything is read from the running system and the installed packages, never assumed: the CPU
model and core counts from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere), the cores
this process may use (``os.sched_getaffinity``: a container or a Slurm allocation sees fewer
than the machine has), memory from ``/proc/meminfo``, the GPU through ``cuda-bindings``
(:mod:`tseg.runtime.execution.cuda`), the NVIDIA driver's version from
``/proc/driver/nvidia/version`` where the driver publishes it, and library versions from the
installed distributions (TensorRT is not imported: its version is its package's).

Host memory of this process (resident and peak, Linux) is measured here too: the engine
benchmark reports what a model took on the CPU.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.util.versions import versions

#: Distributions whose versions a benchmark reports beside tseg-rt's own (absent ones are left out).
BENCH_LIBRARIES = ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13",
                   "cuda-bindings", "cuda-python", "torch", "cupy-cuda12x", "cupy-cuda13x", "timm",
                   "segmentation-models-pytorch")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_info() -> dict[str, Any]:
    """CPU model, logical and physical cores, and the cores this process may use."""
    text = _read("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.lower().startswith(("model name", "hardware", "cpu model"))), None)
    cores = {(block.get("physical id"), block.get("core id")) for block in _cpuinfo_blocks(text)
             if block.get("core id") is not None}
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model or platform.processor() or platform.machine(), "architecture": platform.machine(),
            "logical_cores": os.cpu_count(), "physical_cores": len(cores) or None, "usable_cores": usable}


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        if fields:
            blocks.append(fields)
    return blocks


def memory_info() -> dict[str, Any]:
    """Total and available memory of the machine in bytes (``/proc/meminfo``; None elsewhere)."""
    text = _read("/proc/meminfo") or ""
    values = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+) kB", line)
        if m:
            values[m.group(1)] = int(m.group(2)) * 1024
    return {"total_bytes": values.get("MemTotal"), "available_bytes": values.get("MemAvailable")}


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver's version (e.g. ``580.65.06``) where the driver publishes it."""
    text = _read("/proc/driver/nvidia/version")
    m = re.search(r"Kernel Module(?: for \w+)?\s+(\d+\.\d+(?:\.\d+)?)", text or "")
    return m.group(1) if m else None


def cuda_text(version: int | None) -> str | None:
    """CUDA's integer versions as text: 12080 -> ``"12.8"``."""
    return None if not version else f"{version // 1000}.{(version % 1000) // 10}"


def gpu_info() -> dict[str, Any]:
    """Every visible CUDA device (name, compute capability, memory), the CUDA version the driver
    supports and the runtime's, or why there is none."""
    from tseg.runtime.execution.cuda import bindings_version, cuda_status, device_properties

    status = cuda_status()
    out: dict[str, Any] = {"devices": [], "cuda_bindings": bindings_version(),
                           "nvidia_driver": nvidia_driver_version()}
    if not status.ok:
        out["reason"] = status.reason
        out["driver_cuda"] = cuda_text(status.driver_version)
        return out
    for index in range(status.count):
        props = device_properties(index)
        if props:
            out["devices"].append({"index": index, "name": props["name"],
                                   "compute_capability": props["compute_capability"],
                                   "memory_bytes": props["total_memory_bytes"]})
            out["driver_cuda"] = cuda_text(props.get("driver_version"))
            out["runtime_cuda"] = cuda_text(props.get("runtime_version"))
    return out


def onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not fatal
        return {"error": f"onnxruntime cannot be imported: {exc}"}
    return {"version": ort.__version__, "providers": list(ort.get_available_providers())}


def machine_info() -> dict[str, Any]:
    """The whole description a benchmark result carries."""
    from importlib import metadata

    libraries = versions()
    for name in BENCH_LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu_info(), "memory": memory_info(),
            "gpu": gpu_info(), "onnxruntime": onnxruntime_info(), "libraries": libraries}


def gpu_label(devices: Sequence[Mapping[str, Any]]) -> str:
    """The first of :func:`gpu_info`'s ``devices`` as ``NVIDIA H200 (9.0)``, or ``no GPU``."""
    return f"{devices[0]['name']} ({devices[0]['compute_capability']})" if devices else "no GPU"


def describe_machine(info: dict[str, Any]) -> str:
    """One line: ``NVIDIA H200 (9.0), driver 580.65.06, CUDA 13.0; AMD EPYC ... (16 cores)``."""
    gpu = info.get("gpu", {})
    devices = gpu.get("devices") or []
    cpu = info.get("cpu", {})
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    host = f"{cpu.get('model')} ({cores} cores)"
    if not devices:
        return f"no GPU; {host}"
    extra = f" x {len(devices)}" if len(devices) > 1 else ""
    driver = f", driver {gpu['nvidia_driver']}" if gpu.get("nvidia_driver") else ""
    return f"{gpu_label(devices)}{extra}{driver}, CUDA {gpu.get('driver_cuda')}; {host}"


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux)."""
    text = _read("/proc/self/statm")
    return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE") if text else None


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory (``VmHWM``, Linux) since start or :func:`reset_peak_rss`."""
    m = re.search(r"VmHWM:\s+(\d+) kB", _read("/proc/self/status") or "")
    return int(m.group(1)) * 1024 if m else None


def reset_peak_rss() -> bool:
    """Reset the peak to the current resident memory where Linux allows it (True if it did)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
