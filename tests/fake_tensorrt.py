"""A behavioural stand-in for the ``tensorrt`` module, for machines without TensorRT or a GPU.

It implements just what tseg-rt calls, with the real module's names and enum values for the
version it pretends to be (10.x or 11.x: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is 1 in
10.x and 0 in 11.x; ``BuilderFlag.FP16`` exists only in 10.x). Its engine computes
``255 - red`` on the simulated device of :mod:`helpers`. ``tests/engines/test_trt_api_surface.py``
checks, against the real TensorRT Python bindings, that this fake never disagrees with the real
module and that every call tseg-rt makes exists and is called as its signature says.

Knobs for failure paths (keyword arguments of :func:`fake_builder_trt`): ``fail_with`` (the
build returns None after logging that message), ``cache_mismatch`` (``set_timing_cache`` returns
False for a non-empty cache, as for a cache made on another device), ``no_timing_cache``
(``get_timing_cache`` returns None after the build).
"""

from __future__ import annotations

import enum
import types
from typing import Any

from helpers import SimDevice

TEN = "10.9.0.34"
ELEVEN = "11.4.0.106"
ENGINE_BYTES = b"serialized engine bytes"


def _major(version: str) -> int:
    return int(version.split(".")[0])


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag10(enum.IntEnum):
    FP16 = 0


class BuilderFlag11(enum.IntEnum):
    TF32 = 6


class NetworkFlag10(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class NetworkFlag11(enum.IntEnum):
    STRONGLY_TYPED = 0


def fake_tensorrt(device: SimDevice, version: str = TEN, io_dtype: DataType = DataType.UINT8,
                  address_ok: bool = True) -> types.ModuleType:
    """The runtime side: Runtime -> ICudaEngine -> IExecutionContext on the simulated device."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class ILogger:
        Severity = Severity
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING,
                                                         Severity.INFO, Severity.VERBOSE)

        def __init__(self) -> None:
            pass

        def log(self, severity: Severity, msg: str) -> None:  # pragma: no cover - overridden
            pass

    class IExecutionContext:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.calls: list[tuple[int, int, int]] = []

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if name != "image" or not (64 <= shape[1] <= 256 and 64 <= shape[2] <= 256):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = memory
            return address_ok

        def execute_async_v3(self, stream_handle: int) -> bool:
            n, h, w, _ = self.shapes["image"]
            x = device.memory[self.addresses["image"]][: n * h * w * 3].reshape(n, h, w, 3)
            device.memory[self.addresses["tumour_probability"]][: n * h * w] = (255 - x[..., 0]).ravel()
            self.calls.append((n, h, w))
            stream = next(s for s in device.streams if int(s) == stream_handle)
            device._op("compute", stream, 4.0, {self.addresses["image"]}, {self.addresses["tumour_probability"]})
            return True

    class ICudaEngine:
        num_io_tensors = 2

        def __init__(self) -> None:
            self.context = IExecutionContext()

        def get_tensor_name(self, index: int) -> str:
            return ["image", "tumour_probability"][index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> DataType:
            return io_dtype

        @property
        def device_memory_size_v2(self) -> int:
            return 1 << 20

        def create_execution_context(self) -> IExecutionContext:
            return self.context

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            if bytes(serialized_engine) == ENGINE_BYTES:
                return ICudaEngine()
            self.logger.log(Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
            return None

    trt.ILogger, trt.TensorIOMode, trt.DataType, trt.Runtime = ILogger, TensorIOMode, DataType, Runtime
    trt.ICudaEngine, trt.IExecutionContext = ICudaEngine, IExecutionContext
    return trt


def fake_builder_trt(plan_bytes: bytes = ENGINE_BYTES, fail_with: str | None = None, version: str = TEN,
                     cache_mismatch: bool = False, no_timing_cache: bool = False,
                     device: SimDevice | None = None) -> tuple[types.ModuleType, list[tuple]]:
    """The builder side, plus the runtime side of :func:`fake_tensorrt`; returns (module, calls)."""
    trt = fake_tensorrt(device or SimDevice(), version)
    calls: list[tuple] = []
    ten = _major(version) < 11

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timing cache"

    class IBuilderConfig:
        def __init__(self) -> None:
            self.builder_optimization_level = 3
            self._cache: ITimingCache | None = None

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            calls.append(("workspace", pool, pool_size))

        def set_flag(self, flag: Any) -> None:
            calls.append(("flag", flag))

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            calls.append(("timing_cache_in", bytes(serialized_timing_cache)))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch, cache.data))
            if cache_mismatch and cache.data and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return None if no_timing_cache else self._cache

        def add_optimization_profile(self, profile: "IOptimizationProfile") -> int:
            calls.append(("profile", profile.shapes))
            return 0

    class IOptimizationProfile:
        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
            self.shapes = (input, list(min), list(opt), list(max))

    class INetworkDefinition:
        pass

    class IParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self.logger = logger

        def parse_from_file(self, model: str) -> bool:
            calls.append(("parse", model))
            return True

        def get_error(self, index: int) -> IParserError:
            return IParserError("")

    class IHostMemory(bytes):
        pass

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            calls.append(("network_flags", flags))
            return INetworkDefinition()

        def create_builder_config(self) -> IBuilderConfig:
            self.config = IBuilderConfig()
            return self.config

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
            calls.append(("optimization_level", config.builder_optimization_level))
            self.logger.log(Severity.VERBOSE, "Tactic search: a verbose message")
            self.logger.log(Severity.INFO, "Total time: 12 s")
            if fail_with:
                self.logger.log(Severity.ERROR, fail_with)
                return None
            return IHostMemory(plan_bytes)

    trt.Builder, trt.OnnxParser, trt.IBuilderConfig, trt.IOptimizationProfile = (Builder, OnnxParser, IBuilderConfig,
                                                                                 IOptimizationProfile)
    trt.INetworkDefinition, trt.ITimingCache, trt.IHostMemory, trt.IParserError = (INetworkDefinition, ITimingCache,
                                                                                   IHostMemory, IParserError)
    trt.NetworkDefinitionCreationFlag = NetworkFlag10 if ten else NetworkFlag11
    trt.BuilderFlag = BuilderFlag10 if ten else BuilderFlag11
    trt.MemoryPoolType = MemoryPoolType
    return trt, calls
