"""ONNX Runtime backend: CPU, CUDA (with I/O binding) or ONNX Runtime's TensorRT provider.

Providers are chosen explicitly and reported: ``providers="auto"`` takes CUDA when
``onnxruntime-gpu`` is installed and a GPU is present, else the CPU; ``"cpu"``, ``"cuda"`` and
``"tensorrt"`` insist (and fail with the reason when unavailable). On the CPU, intra-op threads
default to the machine's CPU count with all graph optimisations (docs/gpus.md), and the CPU memory
arena is off by default: for a 7680 x 7680 tile of the bundled model the arena held 13.5 GB of
RSS against 5.7 GB without it (the arena is faster once warm, ~3 s against ~6.5 s a tile:
``memory_arena=True`` for machines with memory to spare). The model
contract comes from the ONNX ``metadata_props`` key ``tseg``; a file without one runs with the
paper's values and a warning. The graph must take uint8 NHWC and give uint8 N1HW.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from tseg.runtime.execution.contract import METADATA_KEY, PAPER, ModelContract, layout_problem
from tseg.runtime.errors import BackendUnavailableError, ContractError, ModelError
from tseg.runtime.execution.backends.base import Backend

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


def _resolve_providers(choice: str | list[Any] | None, device_id: int,
                       trt_options: dict[str, Any] | None) -> list[Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(choice, list):
        return choice
    choice = (choice or "auto").lower()
    if choice == "cpu":
        return [CPU]
    cuda = (CUDA, {"device_id": device_id})
    if choice == "cuda":
        if CUDA not in available:
            raise BackendUnavailableError(
                "ONNX Runtime has no CUDA provider here: install onnxruntime-gpu instead of "
                "onnxruntime (pip uninstall onnxruntime && pip install onnxruntime-gpu) on a machine "
                f"with an NVIDIA GPU (available providers: {available})"
            )
        return [cuda, CPU]
    if choice == "tensorrt":
        if TRT not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime has no TensorRT provider here (available: {available}); install "
                "onnxruntime-gpu and TensorRT, or build an engine with `tseg-rt build-engine`"
            )
        options = {"device_id": device_id, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_timing_cache_enable": True}
        options.update(trt_options or {})
        return [(TRT, options), cuda, CPU]
    if choice == "auto":
        from tseg.runtime.execution.cuda import device_count

        if CUDA in available and device_count() > 0:
            return [cuda, CPU]
        return [CPU]
    raise BackendUnavailableError(f"unknown ONNX Runtime provider choice {choice!r}: use auto, cpu, cuda or tensorrt")


def _spec(arg: Any) -> tuple[str, str, list[Any]]:
    """``(name, element type, shape)`` of an ONNX Runtime NodeArg (``tensor(uint8)`` -> ``uint8``)."""
    kind = str(arg.type)
    dtype = kind[len("tensor("):-1] if kind.startswith("tensor(") and kind.endswith(")") else kind
    return (arg.name, dtype, list(arg.shape or []))


def _check_io(path: Path, session: Any, contract: ModelContract) -> None:
    """Refuse, at load, a graph whose inputs and outputs the runtime cannot feed or read."""
    problem = layout_problem([_spec(x) for x in session.get_inputs()],
                             [_spec(y) for y in session.get_outputs()], contract)
    if problem:
        raise ContractError(path, problem)


#: ONNX Runtime's prefix to a load error: "[ONNXRuntimeError] : 1 : FAIL : Load model from PATH failed:".
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(?P<code>\w+)\s*:\s*(Load model from .*? failed:)?\s*")


def load_error(text: str) -> str:
    """What to tell the user when ONNX Runtime refuses a model: an unparsable file is "corrupt or
    not ONNX"; any other refusal (an unregistered custom operator, a type mismatch, an opset this
    ONNX Runtime lacks) keeps ONNX Runtime's own reason, without its prefix."""
    first = text.strip().splitlines()[0] if text.strip() else "no reason given"
    match = _ORT_PREFIX.match(first)
    reason = first[match.end():].strip() if match else first
    if (match and match.group("code") == "INVALID_PROTOBUF") or "Protobuf parsing failed" in first:
        return f"not a readable ONNX model (corrupt or not ONNX): {reason or 'protobuf parsing failed'}"
    return f"ONNX Runtime cannot load the model: {reason or first}"


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path: Path, providers: str | list[Any] | None = None, device_id: int = 0,
                 threads: int | None = None, trt_options: dict[str, Any] | None = None,
                 io_binding: bool = True, memory_arena: bool = False) -> None:
        import onnxruntime as ort

        from tseg.runtime.execution.external_data import check_external_data

        check_external_data(path)  # before ONNX Runtime reads any of it (its own check needs >= 1.32)
        requested = _resolve_providers(providers, device_id, trt_options)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = memory_arena
        try:
            session = ort.InferenceSession(str(path), options, providers=requested)
        except Exception as exc:
            raise ModelError(path, load_error(str(exc))) from exc
        meta = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY in meta:
            contract = ModelContract.from_json(meta[METADATA_KEY], str(path))
        else:
            log.warning("%s: no '%s' model contract in the ONNX metadata; using the paper's values "
                        "(tile 7680, overlap 1024, 1 µm/px, thresholds 85/229)", path, METADATA_KEY)
            contract = PAPER.with_updates(input_name=session.get_inputs()[0].name,
                                          output_name=session.get_outputs()[0].name)
        _check_io(path, session, contract)
        super().__init__(path, contract)
        self._session = session
        self.device_id = device_id
        self.providers = session.get_providers()
        wanted = [p[0] if isinstance(p, tuple) else p for p in requested]
        if wanted[0] != CPU and self.providers[0] == CPU:
            raise BackendUnavailableError(
                f"{path}: ONNX Runtime fell back to the CPU although {wanted[0]} was requested "
                "(CUDA/cuDNN libraries not found?); try onnxruntime.preload_dlls() or providers='cpu'"
            )
        self._io_binding = io_binding and self.providers[0] in (CUDA, TRT)
        log.info("%s: ONNX Runtime providers %s", path.name, self.providers)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        c = self.contract
        if self._io_binding:
            import onnxruntime as ort

            binding = self._session.io_binding()
            binding.bind_ortvalue_input(c.input_name, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id))
            binding.bind_output(c.output_name, "cuda", self.device_id)
            self._session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self._session.run([c.output_name], {c.input_name: batch})[0]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"providers": list(self.providers), "device_id": self.device_id})
        return info

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
