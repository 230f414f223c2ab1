"""Loading a TensorRT engine (Polygraphy's ``EngineFromPath``): TensorRT imported, the plan and its
manifest chosen and checked against this GPU and TensorRT, the plan deserialised and its I/O
tensors checked against the model contract. :class:`~tseg.runtime.execution.backends.tensorrt.TensorRTBackend`
(the runner) runs what :func:`load_engine` returns.

* The manifest (``model.plan.json``, :mod:`tseg.runtime.execution.engine_manifest`) must exist
  and match the plan's sha256; an engine built with another TensorRT version or for another
  compute capability is refused with the reason (and ``deserialize_cuda_engine`` returning None
  is reported the same way).
* A folder of plans (``--engine PLANS/``: one ONNX model built for several GPU types, each plan
  with its manifest) loads the plan whose manifest matches this GPU and TensorRT
  (:func:`select_plan`), or refuses with each plan's reason; results made by any plan of the
  folder count as made by this model when a batch resumes (``equivalent_sha256``).

TensorRT and CUDA are imported only inside functions here, so the module imports without them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.errors import BackendUnavailableError, EngineMismatchError, ModelError
from tseg.runtime.execution.backends.base import ENGINE_SUFFIXES
from tseg.runtime.execution.engine_manifest import EngineManifest, incompatibilities, manifest_path, read_manifest

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed: pip install 'tseg-rt[trt]' on a machine with an NVIDIA GPU "
            f"({exc})") from None
    return trt


#: How many of TensorRT's INFO-or-worse messages a logger keeps to explain a failure.
LOGGER_TAIL = 200
VERBOSE_LEVEL = 5  # below logging.DEBUG: TensorRT's VERBOSE messages reach logging only when asked for


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards messages to :mod:`logging` and keeps a bounded tail of the
    INFO, WARNING and ERROR ones to explain failures. VERBOSE messages (tens of thousands in a
    build) are never kept, and formatted only when logging is enabled at level 5."""
    severity = trt.ILogger.Severity
    levels = {int(severity.INTERNAL_ERROR): logging.ERROR, int(severity.ERROR): logging.ERROR,
              int(severity.WARNING): logging.WARNING, int(severity.INFO): logging.DEBUG,
              int(severity.VERBOSE): VERBOSE_LEVEL}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: deque[tuple[int, str]] = deque(maxlen=LOGGER_TAIL)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(int(severity), logging.DEBUG)
            if level > VERBOSE_LEVEL:
                self.messages.append((int(severity), msg))
            if log.isEnabledFor(level):
                log.log(level, "TensorRT: %s", msg)

        def tail(self, count: int = 5) -> str:
            """The last ``count`` errors when any were logged, else the last ``count`` messages."""
            errors = [m for s, m in self.messages if s <= int(severity.ERROR)]
            chosen = errors[-count:] if errors else [m for _, m in list(self.messages)[-count:]]
            return " | ".join(chosen) or "TensorRT logged nothing"

    return Logger()


def plans_in(folder: Path) -> list[Path]:
    """The engine files (``.plan``, ``.engine``, ``.trt``) directly in ``folder``, sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in ENGINE_SUFFIXES)


def select_plan(folder: Path, tensorrt_version: str, device: Mapping[str, Any]) -> tuple[Path, frozenset[str]]:
    """The plan in ``folder`` whose manifest matches ``tensorrt_version`` and ``device`` (the first
    by name if several do), and the sha256 of every plan in the folder.

    All plans must come from one ONNX model (their manifests' ONNX sha256), so that whichever GPU
    runs a slide, the result is this model's. Raises
    :class:`~tseg.runtime.errors.EngineMismatchError` naming each plan and why it cannot run here."""
    folder = Path(folder)
    plans = plans_in(folder)
    if not plans:
        raise ModelError(folder, "no .plan engines in this folder; give an .onnx model, a .plan engine, or a "
                                 "folder of plans built with `tseg-rt build-engine`")
    manifests = {}
    for plan in plans:
        if not manifest_path(plan).exists():
            raise ModelError(plan, f"engine without manifest ({manifest_path(plan).name} is missing): every plan in "
                                   f"{folder} needs the manifest `tseg-rt build-engine` writes beside it")
        manifests[plan] = read_manifest(plan, verify=False)
    models = {str((m.onnx or {}).get("sha256")) for m in manifests.values()}
    if len(models) > 1:
        raise ModelError(folder, "the plans come from different ONNX models (sha256 "
                                 + ", ".join(sorted(m[:12] + "..." for m in models))
                                 + "): keep the plans of one model in a folder, so every GPU runs the same model")
    why = {plan: incompatibilities(m, tensorrt_version, device) for plan, m in manifests.items()}
    matching = [plan for plan, reasons in why.items() if not reasons]
    if not matching:
        here = f"{device.get('name')} (compute capability {device.get('compute_capability')}), TensorRT {tensorrt_version}"
        raise EngineMismatchError(folder, f"no plan here runs on {here}: "
                                          + "; ".join(f"{p.name}: {'; '.join(r)}" for p, r in why.items())
                                          + ". Build one on this GPU type with `tseg-rt build-engine MODEL.onnx -o "
                                          + f"{folder}/MODEL-<gpu>.plan`")
    if len(matching) > 1:
        log.info("%s: %d plans match this GPU (%s); using %s", folder, len(matching),
                 ", ".join(p.name for p in matching), matching[0].name)
    return matching[0], frozenset(m.plan_sha256 for m in manifests.values())


@dataclass
class LoadedEngine:
    """A deserialised engine ready for a runner: the plan, its manifest, the CUDA device API made
    current before TensorRT allocated, and the TensorRT objects that must outlive the engine."""

    path: Path
    manifest: EngineManifest
    device_id: int
    api: Any  # tseg.runtime.execution.executor.CudaDeviceAPI
    trt: Any
    logger: Any
    runtime: Any
    engine: Any
    plan_folder: Path | None = None
    equivalent_sha256: frozenset[str] = field(default_factory=frozenset)


def choose_plan(path: Path, manifest: EngineManifest | None, trt_version: str,
                device: Mapping[str, Any]) -> tuple[Path, EngineManifest, frozenset[str]]:
    """The plan to load (``path`` itself with its ``manifest``, or the plan of folder ``path`` built
    for this GPU), its verified manifest, and the sha256 of every plan that counts as this model;
    refuses a plan that cannot run with ``trt_version`` on ``device``."""
    plan, equivalent = path, frozenset[str]()
    if manifest is None:
        plan, equivalent = select_plan(path, trt_version, device)
        manifest = read_manifest(plan)
        log.info("%s: using %s for %s", path, plan.name, device.get("name"))
    reasons = incompatibilities(manifest, trt_version, device)
    if reasons:
        raise EngineMismatchError(plan, "this engine cannot run here: " + "; ".join(reasons)
                                  + ". Build one for this GPU with `tseg-rt build-engine MODEL.onnx -o MODEL.plan`")
    return plan, manifest, equivalent


def check_engine_io(engine: Any, trt: Any, manifest: EngineManifest, plan: Path) -> None:
    """The engine's I/O tensors are the contract's input and output, both UINT8."""
    c = manifest.model_contract
    modes = {engine.get_tensor_name(i): engine.get_tensor_mode(engine.get_tensor_name(i))
             for i in range(engine.num_io_tensors)}
    if modes.get(c.input_name) != trt.TensorIOMode.INPUT or modes.get(c.output_name) != trt.TensorIOMode.OUTPUT:
        raise ModelError(plan, f"the engine's I/O tensors {sorted(modes)} do not match the contract's "
                               f"'{c.input_name}' -> '{c.output_name}'")
    for name in (c.input_name, c.output_name):
        dtype = engine.get_tensor_dtype(name)
        if dtype != trt.DataType.UINT8:
            raise ModelError(plan, f"the engine's tensor '{name}' is {getattr(dtype, 'name', dtype)}, not UINT8: "
                                   "tseg-rt moves uint8 tiles; rebuild the engine from `tseg-rt export`'s ONNX")


def load_engine(path: str | Path, device_id: int = 0) -> LoadedEngine:
    """Load a ``.plan`` (or the right plan of a folder of plans) on CUDA device ``device_id``.

    The manifest of a single plan is read (and its sha256 verified) before TensorRT is imported, so
    a broken manifest is reported on any machine; a folder's plan is chosen once the GPU is known."""
    from tseg.runtime.execution.cuda import device_properties, no_device_reason
    from tseg.runtime.execution.executor import CudaDeviceAPI

    path = Path(path)
    manifest = None if path.is_dir() else read_manifest(path)
    trt = import_tensorrt()
    reason = no_device_reason(device_id)
    if reason:
        raise BackendUnavailableError(f"{path}: CUDA device {device_id} cannot be used: {reason}. TensorRT "
                                      "engines need the GPU they were built for (an .onnx model runs on the "
                                      "CPU with ONNX Runtime)")
    plan, manifest, equivalent = choose_plan(path, manifest, str(trt.__version__), device_properties(device_id))
    api = CudaDeviceAPI(device_id)  # sets the device before TensorRT allocates
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise EngineMismatchError(plan, f"TensorRT refused to deserialize the engine ({logger.tail()}); "
                                        "rebuild it on this machine")
    check_engine_io(engine, trt, manifest, plan)
    return LoadedEngine(plan, manifest, device_id, api, trt, logger, runtime, engine,
                        path if path.is_dir() else None, equivalent)
