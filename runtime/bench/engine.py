"""The engine alone, like ``trtexec``: time per tile, pixel and FLOP rates, memory, copy rates.

One tile of uint8 noise (the network's cost does not depend on the pixels) of the engine's own
size (a TensorRT plan's optimisation profile, else the model contract's tile size: 7680² for the
paper's network and the bundled model), or ``tile``, rounded up to the model's divisor:

1. ``warmup`` unmeasured calls (the first also reported alone: ONNX Runtime allocates its
   buffers, TensorRT its context, at the first call of a shape; with no warm-up, the first timed
   call is that first call);
2. ``tiles`` calls of ``backend.infer`` one after another, each timed from the host (copies in
   and out included): min, median, p99 and mean seconds per tile (p99 approaches the maximum
   below 100 tiles); the loop stops early, after at least one tile, when ``time_limit_s`` is
   spent (``stopped_by_time_limit``);
3. for backends that overlap copies with compute (TensorRT on CUDA streams), the same number of
   tiles streamed through ``infer_many``: seconds per tile at full pipelining.

Rates: megapixels per second (tile pixels / median seconds), and TFLOP/s against the FLOP count
of the model's ONNX graph at this tile size (:mod:`tseg.runtime.bench.flops`: 1 multiply-add = 2
FLOP; 42.0 TFLOP per 7680² tile for the paper's network). A plan is counted from its ONNX graph:
``onnx`` if given, else the file its manifest names, if it is still there unchanged.

Memory: this process's host memory (resident before loading, and the peak while loading and
running: ONNX Runtime on the CPU keeps its activations there), and on a CUDA machine the
device's used memory before loading and after the run (device-wide: other processes count too)
with a plan's own activation memory from its manifest. Copy rates: :mod:`tseg.runtime.bench.device`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tseg.runtime.bench.device import copy_rates, device_memory
from tseg.runtime.bench.flops import FlopCount, count_flops
from tseg.runtime.bench.machine import peak_rss_bytes, reset_peak_rss, rss_bytes
from tseg.runtime.errors import InvalidArgumentError, ModelError, TsegError
from tseg.runtime.execution.backends.base import Backend, file_sha256
from tseg.runtime.execution.backends import load_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """What the engine benchmark runs (module docstring)."""

    tile: int | None = None
    tiles: int = 10
    warmup: int = 2
    time_limit_s: float = 300.0
    onnx: Path | None = None
    copy_rates: bool = True

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 16:
            raise InvalidArgumentError(f"tile must be at least 16 px, got {self.tile}")
        if self.tiles < 1 or self.warmup < 0:
            raise InvalidArgumentError(f"tiles must be >= 1 and warmup >= 0, got {self.tiles} and {self.warmup}")
        if not self.time_limit_s > 0:
            raise InvalidArgumentError(f"time_limit_s must be positive, got {self.time_limit_s}")


def tile_side(backend: Backend, requested: int | None) -> int:
    """The side to run: ``requested`` or the engine's own, rounded up to the model's divisor and
    checked against a plan's profile."""
    divisor = backend.contract.divisor
    manifest = getattr(backend, "manifest", None)
    if requested is None:
        requested = int(manifest.profile["opt"][1]) if manifest is not None else int(backend.contract.tile_size)
    side = -(-int(requested) // divisor) * divisor
    if manifest is not None and side > int(manifest.profile["max"][1]):
        raise InvalidArgumentError(f"a {side}² tile exceeds the engine's profile maximum "
                                   f"{manifest.profile['max'][1]}² (rebuild it with a larger --max-tile)")
    return side


def graph_for(model: Path, onnx: Path | None = None) -> tuple[Path | None, str | None]:
    """The ONNX graph whose FLOP a model's tiles cost: ``onnx`` if given, the model itself if it is
    one, else (a plan) the graph its manifest names if it is still there unchanged; or None and why."""
    if onnx is not None:
        return Path(onnx), None
    model = Path(model)
    if model.suffix.lower() == ".onnx":
        return model, None
    from tseg.runtime.execution.engine_manifest import read_manifest

    try:
        source = read_manifest(model, verify=False).onnx or {}
    except TsegError as exc:
        return None, f"cannot read the plan's manifest ({exc}): pass --onnx MODEL.onnx"
    path = Path(source["path"]) if source.get("path") else None
    if path is None or not path.is_file():
        return None, "the plan's ONNX model is not at the path its manifest names: pass --onnx MODEL.onnx"
    if source.get("sha256") and file_sha256(path) != source["sha256"]:
        return None, f"{path} changed since the plan was built (sha256 differs): pass --onnx with the plan's model"
    return path, None


def model_flops(backend: Backend, side: int, onnx: Path | None = None) -> tuple[FlopCount | None, str | None]:
    """The FLOP count of one ``side``² tile, or None and the reason."""
    path, why = graph_for(backend.path, onnx)
    if path is None:
        return None, why
    try:
        return count_flops(path, side, side), None
    except TsegError as exc:
        return None, str(exc)


def _summary(times: list[float]) -> dict[str, float]:
    a = np.asarray(times, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


def _overlaps(backend: Backend) -> bool:
    return type(backend).infer_many is not Backend.infer_many


def bench_engine(model: str | Path, settings: EngineSettings = EngineSettings(), providers: str | None = None,
                 device: int = 0) -> tuple[dict[str, Any], Backend]:
    """Load ``model`` and measure it (module docstring). Returns the result and the loaded backend
    (the end-to-end benchmark runs on it, warm)."""
    from tseg.runtime.execution.cuda import device_count

    cuda = device_count() > device
    if Path(model).suffix.lower() == ".onnx":
        import onnxruntime  # noqa: F401 - imported before the baseline: the library is not the model's memory
    reset_peak_rss()
    host_before = rss_bytes()
    dev_before = device_memory(device) if cuda else None
    t0 = time.perf_counter()
    backend = load_backend(model, providers=providers, device_id=device)
    load_s = time.perf_counter() - t0
    try:
        result = _measure(backend, settings, device, cuda, load_s)
    except BaseException:
        backend.close()
        raise
    peak = peak_rss_bytes()
    side = result["tile"][0]
    flop, flop_reason = model_flops(backend, side, settings.onnx)  # after the peak: it loads the graph
    result["flop"] = flop.as_dict() if flop else {"error": flop_reason}
    result["tflop_per_s"] = flop.tflop / result["s_per_tile"]["median"] if flop else None
    result["tflop_per_s_streamed"] = (flop.tflop / result["streamed_s_per_tile"]
                                      if flop and result["streamed_s_per_tile"] else None)
    result["host_memory"] = {"rss_before_load_bytes": host_before, "peak_rss_bytes": peak,
                             "peak_above_before_load_bytes": (peak - host_before) if peak and host_before else None}
    if cuda:
        after = device_memory(device)
        manifest = getattr(backend, "manifest", None)
        result["device_memory"] = {
            "used_before_load_bytes": dev_before["used_bytes"] if dev_before else None,
            "used_after_run_bytes": after["used_bytes"] if after else None,
            "used_by_this_run_bytes": (after["used_bytes"] - dev_before["used_bytes"]) if after and dev_before else None,
            "total_bytes": after["total_bytes"] if after else None,
            "engine_activation_bytes": manifest.device_memory_bytes if manifest is not None else None}
    return result, backend


def _measure(backend: Backend, settings: EngineSettings, device: int, cuda: bool, load_s: float) -> dict[str, Any]:
    side = tile_side(backend, settings.tile)
    tile = np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    result: dict[str, Any] = {"model": backend.describe(), "load_s": load_s, "tile": [side, side],
                              "input_bytes": tile.nbytes, "output_bytes": side * side}
    first = None
    for i in range(settings.warmup):
        t0 = time.perf_counter()
        backend.infer(tile)
        if i == 0:
            first = time.perf_counter() - t0
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(settings.tiles):
        t0 = time.perf_counter()
        backend.infer(tile)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > settings.time_limit_s:
            break
    if first is None:  # no warm-up: the first timed call was the first call
        first = times[0]
    stats = _summary(times)
    streamed = None
    if _overlaps(backend):
        t0 = time.perf_counter()
        for _ in backend.infer_many((i, tile) for i in range(len(times))):
            pass
        streamed = (time.perf_counter() - t0) / len(times)
    megapixels = side * side / 1e6
    result.update({
        "warmup_tiles": settings.warmup, "first_call_s": first, "tiles_timed": len(times),
        "stopped_by_time_limit": len(times) < settings.tiles, "s_per_tile": stats, "s_per_tile_all": times,
        "streamed_s_per_tile": streamed,
        "megapixels_per_s": megapixels / stats["median"],
        "megapixels_per_s_streamed": megapixels / streamed if streamed else None,
    })
    if settings.copy_rates and cuda:
        try:
            result["copy_rates"] = copy_rates(device, nbytes=tile.nbytes)
        except TsegError as exc:
            result["copy_rates"] = {"error": str(exc)}
    elif settings.copy_rates:
        from tseg.runtime.execution.cuda import cuda_status

        result["copy_rates"] = {"skipped": f"no CUDA device: {cuda_status().reason}"}
    return result


def default_model() -> Path:
    """The bundled demonstration model (a benchmark of it measures the pipeline, not the paper's network)."""
    from tseg.runtime.models import default_model_path

    path = Path(default_model_path())
    if not path.is_file():
        raise ModelError(path, "the bundled model is missing from this installation; pass --engine")
    return path
