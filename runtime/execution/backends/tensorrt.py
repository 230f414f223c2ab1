"""TensorRT backend: a ``.plan`` engine with its manifest, run on CUDA streams.

* The manifest (``model.plan.json``) must exist and match the plan's sha256; an engine built with
  another TensorRT version or for another compute capability is refused with the reason (and
  ``deserialize_cuda_engine`` returning None is reported the same way).
* Tensors are bound by name: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.
* Tiles are run one at a time (batch 1: the engine's profile, TENSORRT.md) through the
  :class:`~tseg.runtime.execution.executor.DoubleBufferedExecutor`, so the copies of neighbouring tiles
  overlap each tile's compute when the pipeline streams tiles through :meth:`infer_many`.
* Edge tiles smaller than 7680² run at their own (divisor-padded) size, inside the profile's
  range — TensorRT handles dynamic shapes without extra compute, so padding them to 7680² would
  only waste time. A tile smaller than the profile's minimum side is zero-padded up to it (as
  the paper pads to the divisor) and the output cropped; one larger than the maximum is refused.

A folder of plans (``--engine PLANS/``: one ONNX model built for several GPU types, each plan with
its manifest) loads the plan whose manifest matches this GPU and TensorRT (:func:`select_plan`),
or refuses with each plan's reason; results made by any plan of the folder count as made by
this model when a batch resumes (``equivalent_sha256``).

Calls are serialised with a lock (one execution context); each call makes the backend's device
current on the calling thread first, so a backend built on one thread can be called from others
(the :class:`~tseg.runtime.execution.segmenter.Segmenter` is thread-safe). Run one backend per GPU, as
``tseg-rt run --devices`` does. The engine's I/O tensors must be UINT8 (checked at load).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from tseg.runtime.errors import BackendUnavailableError, DeviceError, EngineMismatchError, InvalidArgumentError, ModelError
from tseg.runtime.execution.backends.base import Backend

log = logging.getLogger(__name__)


def plans_in(folder: Path) -> list[Path]:
    """The engine files (``.plan``, ``.engine``, ``.trt``) directly in ``folder``, sorted."""
    from tseg.runtime.execution.backends.base import ENGINE_SUFFIXES

    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in ENGINE_SUFFIXES)


def select_plan(folder: Path, tensorrt_version: str, device: Mapping[str, Any]) -> tuple[Path, frozenset[str]]:
    """The plan in ``folder`` whose manifest matches ``tensorrt_version`` and ``device`` (the first
    by name if several do), and the sha256 of every plan in the folder.

    All plans must come from one ONNX model (their manifests' ONNX sha256), so that whichever GPU
    runs a slide, the result is this model's. Raises
    :class:`~tseg.runtime.errors.EngineMismatchError` naming each plan and why it cannot run here."""
    from tseg.engines.manifest import incompatibilities, manifest_path, read_manifest

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


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, path: Path, device_id: int = 0, **_: Any) -> None:
        from tseg.engines.build import import_tensorrt, make_logger
        from tseg.engines.manifest import incompatibilities, read_manifest

        from tseg.runtime.execution.cuda import device_properties, no_device_reason
        from tseg.runtime.execution.executor import CudaDeviceAPI, DoubleBufferedExecutor

        folder = Path(path) if Path(path).is_dir() else None
        self.plan_folder = folder
        self.equivalent_sha256: frozenset[str] = frozenset()
        if folder is None:
            manifest = read_manifest(path)
        trt = import_tensorrt()
        reason = no_device_reason(device_id)
        if reason:
            raise BackendUnavailableError(f"{path}: CUDA device {device_id} cannot be used: {reason}. TensorRT "
                                          "engines need the GPU they were built for (an .onnx model runs on the "
                                          "CPU with ONNX Runtime)")
        device = device_properties(device_id)
        if folder is not None:
            path, self.equivalent_sha256 = select_plan(folder, str(trt.__version__), device)
            manifest = read_manifest(path)
            log.info("%s: using %s for %s", folder, Path(path).name, device.get("name"))
        super().__init__(Path(path), manifest.model_contract)
        self._sha256 = manifest.plan_sha256
        self.manifest = manifest
        reasons = incompatibilities(manifest, str(trt.__version__), device)
        if reasons:
            raise EngineMismatchError(path, "this engine cannot run here: " + "; ".join(reasons)
                                      + ". Build one for this GPU with `tseg-rt build-engine MODEL.onnx -o MODEL.plan`")
        self._api = CudaDeviceAPI(device_id)  # sets the device before TensorRT allocates
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self._engine is None:
            raise EngineMismatchError(path, f"TensorRT refused to deserialize the engine ({self._logger.tail()}); "
                                            "rebuild it on this machine")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelError(path, "TensorRT could not create an execution context (out of GPU memory?)")
        c = self.contract
        modes = {self._engine.get_tensor_name(i): self._engine.get_tensor_mode(self._engine.get_tensor_name(i))
                 for i in range(self._engine.num_io_tensors)}
        if modes.get(c.input_name) != trt.TensorIOMode.INPUT or modes.get(c.output_name) != trt.TensorIOMode.OUTPUT:
            raise ModelError(path, f"the engine's I/O tensors {sorted(modes)} do not match the contract's "
                                   f"'{c.input_name}' -> '{c.output_name}'")
        for name in (c.input_name, c.output_name):
            dtype = self._engine.get_tensor_dtype(name)
            if dtype != trt.DataType.UINT8:
                raise ModelError(path, f"the engine's tensor '{name}' is {getattr(dtype, 'name', dtype)}, not UINT8: "
                                       "tseg-rt moves uint8 tiles; rebuild the engine from `tseg-rt export`'s ONNX")
        self.device_id = device_id
        self.min_side = int(manifest.profile["min"][1])
        self.max_side = int(manifest.profile["max"][1])
        max_in = self.max_side * self.max_side * 3
        self._executor = DoubleBufferedExecutor(self._api, max_in, max_in // 3, self._compute,
                                                lambda s: (s[0], 1, s[1], s[2]))
        self._lock = threading.Lock()

    def _compute(self, slot: int, dev_in: Any, dev_out: Any, shape: tuple[int, ...], stream: Any) -> None:
        c = self.contract
        ctx = self._context
        if not ctx.set_input_shape(c.input_name, shape):
            raise ModelError(self.path, f"the engine's profile does not accept input shape {shape}")
        for name, address in ((c.input_name, dev_in), (c.output_name, dev_out)):
            if not ctx.set_tensor_address(name, int(address)):
                raise DeviceError(f"{self.path}: TensorRT refused the device address of '{name}' "
                                  f"({self._logger.tail()})")
        if not ctx.execute_async_v3(int(stream)):
            raise DeviceError(f"{self.path}: TensorRT execute_async_v3 failed for a tile of {shape} "
                              f"({self._logger.tail()})")

    def _fit(self, tile: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Pad a (1, H, W, 3) tile up to the profile's minimum side; refuse above the maximum."""
        h, w = tile.shape[1:3]
        if h > self.max_side or w > self.max_side:
            raise InvalidArgumentError(f"tile {h} x {w} exceeds the engine's profile maximum {self.max_side}² "
                                       "(rebuild with a larger --max-tile)")
        ph, pw = max(h, self.min_side), max(w, self.min_side)
        if (ph, pw) != (h, w):
            tile = np.pad(tile, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
        return tile, (h, w)

    def infer_many(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """Stream batches through the double-buffered executor (copies overlap compute)."""
        sizes: dict[Any, list[tuple[int, int]]] = {}

        def tiles() -> Iterator[tuple[Any, np.ndarray]]:
            for key, batch in batches:
                batch = self.check_input(batch)
                sizes[key] = []
                for i in range(batch.shape[0]):
                    tile, size = self._fit(batch[i : i + 1])
                    sizes[key].append(size)
                    yield (key, i, batch.shape[0]), tile

        with self._lock:
            parts: dict[Any, list[np.ndarray]] = {}
            run = self._executor.run(tiles())  # makes this backend's device current on this thread
            try:
                for (key, i, n), out in run:
                    h, w = sizes[key][i]
                    parts.setdefault(key, []).append(out[:, :, :h, :w])
                    if len(parts[key]) == n:
                        yield key, np.concatenate(parts.pop(key), axis=0)
            finally:
                run.close()  # an abandoned or failed run drains its streams before the lock is released

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return next(self.infer_many([(0, batch)]))[1]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.plan_folder is not None:
            info["plan_folder"] = str(self.plan_folder)
        info.update({"device_id": self.device_id, "tensorrt_version": self.manifest.tensorrt_version,
                     "gpu": self.manifest.gpu, "precision": self.manifest.precision,
                     "profile": self.manifest.profile, "device_memory_bytes": self.manifest.device_memory_bytes})
        return info

    def close(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.close()
            self._executor = None  # type: ignore[assignment]
        self._context = None
        self._engine = None
