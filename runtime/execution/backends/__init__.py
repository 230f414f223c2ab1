"""Model execution behind one small interface (in the spirit of Polygraphy's runners).

A :class:`Backend` is loaded from a path, carries the model contract, and runs
``infer(uint8 NHWC batch) -> uint8 (N, 1, H, W)``. The base class owns input and output
checking; subclasses implement ``_infer_impl`` only. Backends:

* :mod:`tseg.runtime.execution.backends.base` — the interface (:class:`Backend`);
* :mod:`tseg.runtime.execution.backends.onnxruntime` — ``.onnx`` files on ONNX Runtime (CPU, CUDA with
  I/O binding, or its TensorRT provider);
* :mod:`tseg.runtime.execution.backends.tensorrt_loader` (loading a ``.plan`` TensorRT engine and
  checking its manifest, as Polygraphy's ``EngineFromPath``) and
  :mod:`tseg.runtime.execution.backends.tensorrt` (running it on CUDA streams, as ``TrtRunner``).
  TensorRT and CUDA are imported only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tseg.runtime.errors import ModelError, ModelNotFoundError
from tseg.runtime.execution.backends.base import ENGINE_SUFFIXES, ONNX_SUFFIXES, Backend
from tseg.runtime.util.safeio import UnsafeFileError, check_regular


def load_backend(path: str | Path, providers: str | list[Any] | None = None, device_id: int = 0,
                 **options: Any) -> Backend:
    """Load a model file: ``.onnx`` on ONNX Runtime, ``.plan``/``.engine`` on TensorRT, or a
    folder of plans (the one built for this GPU, :func:`tseg.runtime.execution.backends.tensorrt_loader.select_plan`)."""
    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(p, "no such model or engine file")
    if not p.is_dir():
        try:
            check_regular(p)
        except UnsafeFileError as exc:
            raise ModelError(p, f"it {exc.what}") from None
    if p.is_dir():
        if any(q.is_file() and q.suffix.lower() in ENGINE_SUFFIXES for q in p.iterdir()):
            from tseg.runtime.execution.backends.tensorrt import TensorRTBackend

            return TensorRTBackend.from_path(p, device_id)
        raise ModelError(p, "is a folder without .plan engines; give an .onnx model, a .plan engine file, or a "
                            "folder of plans of one model built for several GPU types")
    suffix = p.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        from tseg.runtime.execution.backends.tensorrt import TensorRTBackend

        return TensorRTBackend.from_path(p, device_id)
    if suffix in ONNX_SUFFIXES:
        from tseg.runtime.execution.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(p, providers=providers, device_id=device_id, **options)
    raise ModelError(p, f"unknown model file type '{suffix}': expected .onnx (ONNX Runtime) or .plan (TensorRT)")
