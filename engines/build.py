"""``tseg-rt build-engine model.onnx -o model.plan``: FP16 TensorRT engines for 7680² tiles.

Follows TensorRT's documented Python API (10.x and 11.x):
``trt.Builder`` -> ``create_network`` (strongly typed; the FP16 ONNX from ``tseg-rt export
--precision fp16`` carries the precision) -> ``trt.OnnxParser.parse_from_file`` -> builder config
(``set_memory_pool_limit(WORKSPACE)``, ``builder_optimization_level``, a persistent timing cache
via ``create_timing_cache``/``set_timing_cache``) -> one optimisation profile for batch 1 with
min / opt / max tile shapes (default 512² / 7680² / 7680²; batch 2 at 7680² exceeds TensorRT's
2^31-element tensor limit, docs/gpus.md) -> ``build_serialized_network``.

On TensorRT 10.x an FP32 ONNX may instead be built weakly typed with ``BuilderFlag.FP16``;
TensorRT 11 removed that flag, so there an FP32 ONNX gives an FP32 engine (with a warning).

The plan is written to a temporary name and renamed, and ``model.plan.json`` (the manifest:
versions, GPU, profile, device memory, ONNX sha256 and model contract, settings, build time) is
written beside it. TensorRT is imported only inside :func:`build_engine`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tseg.runtime.errors import BackendUnavailableError, InvalidArgumentError, ModelError, OutputError
from tseg.runtime.execution.backends.base import file_sha256
from tseg.runtime.execution.backends.tensorrt_loader import import_tensorrt, make_logger
from tseg.runtime.execution.engine_manifest import EngineManifest, manifest_path, write_manifest
from tseg.runtime.util.atomic import atomic_write

from .conformance import require_conformance
from .onnx_io import inspect_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSettings:
    min_tile: int = 512
    opt_tile: int = 7680
    max_tile: int = 7680
    workspace_gb: float = 8.0
    optimization_level: int = 3
    timing_cache: str | None = None  # default: ~/.cache/tseg-rt/timing-<gpu>-<trt>.cache
    device: int = 0
    fp16_flag: bool = True  # TensorRT 10.x only, for FP32 ONNX graphs

    def profile(self, divisor: int) -> dict[str, list[int]]:
        for name in ("min_tile", "opt_tile", "max_tile"):
            v = getattr(self, name)
            if v < divisor or v % divisor:
                raise InvalidArgumentError(f"--{name.replace('_', '-')} {v} must be a positive multiple of the model's divisor {divisor}")
        if not self.min_tile <= self.opt_tile <= self.max_tile:
            raise InvalidArgumentError(f"profile tiles must satisfy min <= opt <= max, got {self.min_tile}/{self.opt_tile}/{self.max_tile}")
        return {k: [1, v, v, 3] for k, v in (("min", self.min_tile), ("opt", self.opt_tile), ("max", self.max_tile))}


def default_timing_cache(gpu_name: str, trt_version: str) -> Path:
    safe = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower() or "gpu"
    return Path.home() / ".cache" / "tseg-rt" / f"timing-{safe}-trt{trt_version}.cache"


def attach_timing_cache(config: Any, cache_path: Path) -> Any | None:
    """Give ``config`` the timing cache saved at ``cache_path``, or a fresh one.

    ``set_timing_cache`` returns False for a cache made on another device or TensorRT version
    (the cache's header is verified); such a cache is set aside, with a warning, and the build
    starts from an empty cache. Returns the attached cache, or None when even a fresh cache was
    refused (the build then runs without one)."""
    data = b""
    if cache_path.exists():
        try:
            data = cache_path.read_bytes()
        except OSError as exc:
            log.warning("cannot read the timing cache %s (%s); starting a fresh one", cache_path, exc)
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        log.warning("the timing cache %s was made for another GPU or TensorRT version; starting a fresh one "
                    "(it will be replaced after the build)", cache_path)
        cache = config.create_timing_cache(b"")
        if config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
    log.warning("TensorRT refused a timing cache; building without one (slower builds, nothing else changes)")
    return None


def save_timing_cache(config: Any, cache_path: Path) -> bool:
    """Write the config's timing cache (atomically) for the next build; a failure only warns."""
    try:
        cache = config.get_timing_cache()
        if cache is None:
            log.warning("TensorRT returned no timing cache after the build; %s not updated", cache_path)
            return False
        data = bytes(cache.serialize())
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, lambda tmp: tmp.write_bytes(data))
        return True
    except Exception as exc:  # noqa: BLE001 - the engine is built; a cache is an optimisation
        log.warning("could not save the timing cache %s: %s", cache_path, exc)
        return False


def _out_of_memory(text: str) -> bool:
    lowered = text.lower()
    return "out of memory" in lowered or "outofmemory" in lowered or "cudaerrormemoryallocation" in lowered


def build_engine(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str],
                 settings: BuildSettings = BuildSettings(), overwrite: bool = False) -> EngineManifest:
    """Build ``plan_path`` (and its manifest) from an exported ONNX model.

    Before TensorRT is touched: the model contract and I/O (:func:`inspect_onnx`), the profile,
    the output paths, and conformance with TensorRT's ONNX parser
    (:mod:`tseg.engines.conformance`), so that a graph the parser would reject is refused in
    seconds, not after minutes of building."""
    from tseg.runtime.execution.cuda import bindings_version, device_properties, no_device_reason

    onnx_path, plan = Path(onnx_path), Path(plan_path)
    io = inspect_onnx(onnx_path)  # contract, I/O and precision: checked before TensorRT is needed
    profile = settings.profile(io.contract.divisor)
    for p in (plan, manifest_path(plan)):
        if p.exists() and not overwrite:
            raise OutputError(p, "exists; pass --overwrite to replace it")
    require_conformance(onnx_path, io.input_name, io.output_name)
    trt = import_tensorrt()
    reason = no_device_reason(settings.device)
    if reason:
        raise BackendUnavailableError(f"CUDA device {settings.device} cannot be used: {reason}. TensorRT engines "
                                      "are built on the GPU they will run on (one engine per GPU type)")
    gpu = device_properties(settings.device)
    major = int(str(trt.__version__).split(".")[0])
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    strongly_typed = not (io.precision == "fp32" and major < 11 and settings.fp16_flag)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(onnx_path, "TensorRT's ONNX parser failed: " + "; ".join(errors)[:2000])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * (1 << 30)))
    config.builder_optimization_level = settings.optimization_level
    precision = io.precision
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16 (builder flag)"
    elif io.precision == "fp32":
        log.warning("%s is an FP32 graph and TensorRT %s builds it strongly typed: the engine will be FP32. "
                    "Export with `tseg-rt export --precision fp16` for an FP16 engine.", onnx_path, trt.__version__)
    cache_path = Path(settings.timing_cache) if settings.timing_cache else default_timing_cache(gpu.get("name", "gpu"), trt.__version__)
    timing_cache = attach_timing_cache(config, cache_path)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(io.input_name, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(opt_profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        text = logger.tail(20)
        if _out_of_memory(text):
            raise ModelError(onnx_path, f"out of GPU memory while building ({gpu.get('name')}): try a smaller "
                                        "--workspace-gb or a smaller --max-tile/--opt-tile")
        raise ModelError(onnx_path, f"TensorRT could not build the engine: {text[-1500:]}")
    plan_bytes = bytes(serialized)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise ModelError(plan, f"the freshly built engine does not deserialize ({logger.tail()})")
    memory = getattr(engine, "device_memory_size_v2", None)
    if memory is None:
        memory = getattr(engine, "device_memory_size", None)
    del engine
    atomic_write(plan, lambda tmp: tmp.write_bytes(plan_bytes))
    cache_saved = save_timing_cache(config, cache_path) if timing_cache is not None else False
    manifest = EngineManifest(
        plan=plan.name, plan_sha256=file_sha256(plan), plan_bytes=plan.stat().st_size,
        tensorrt_version=str(trt.__version__), gpu=gpu, precision=precision, profile=profile,
        device_memory_bytes=int(memory) if memory is not None else None,
        onnx={"path": str(onnx_path.resolve()), "sha256": io.sha256},
        contract=io.contract.with_updates(precision="fp16" if "fp16" in precision else "fp32").to_dict(),
        cuda={"runtime_version": gpu.get("runtime_version"), "driver_version": gpu.get("driver_version"),
              "cuda_bindings": bindings_version()},
        io={"input": io.input_name, "output": io.output_name, "input_layout": "NHWC uint8", "output_layout": "N1HW uint8"},
        build={**asdict(settings), "timing_cache": str(cache_path), "timing_cache_saved": cache_saved,
               "strongly_typed": strongly_typed, "seconds": round(seconds, 1),
               "built": datetime.now(timezone.utc).isoformat()},
    )
    try:
        write_manifest(manifest, plan)
    except BaseException:
        plan.unlink(missing_ok=True)
        raise
    return manifest
