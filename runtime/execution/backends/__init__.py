"""Model execution behind one small interface (in the spirit of Polygraphy's runners).

A :class:`Backend` is loaded from a path, carries the model contract, and runs
``infer(uint8 NHWC batch) -> uint8 (N, 1, H, W)``. The base class owns input and output
checking; subclasses implement ``_infer_impl`` only. Backends:

* :mod:`tseg.runtime.execution.backends.onnxruntime` — ``.onnx`` files on ONNX Runtime (CPU, CUDA with
  I/O binding, or its TensorRT provider);
* :mod:`tseg.runtime.execution.backends.tensorrt` — ``.plan`` TensorRT engines with their manifest, on
  CUDA streams. TensorRT and CUDA are imported only there.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from tseg.runtime.execution.contract import ModelContract
from tseg.runtime.errors import InvalidArgumentError, ModelError, ModelNotFoundError
from tseg.runtime.util.safeio import UnsafeFileError, check_regular, open_regular

log = logging.getLogger(__name__)

ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".plan", ".engine", ".trt"}


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a regular file (a FIFO or device is refused with ``UnsafeFileError``, never waited on)."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Backend(ABC):
    """A loaded model. Thread-safe ``infer`` unless a subclass says otherwise."""

    kind: str = "backend"

    def __init__(self, path: Path, contract: ModelContract) -> None:
        self.path = path
        self.contract = contract
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def check_input(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise InvalidArgumentError(f"infer() takes a uint8 (N, H, W, 3) RGB batch, got {got}")
        d = self.contract.divisor
        if batch.shape[1] % d or batch.shape[2] % d:
            raise InvalidArgumentError(
                f"tile height and width must be multiples of the model's divisor {d}, got "
                f"{batch.shape[1]} x {batch.shape[2]} (pad with tseg.runtime.method.tiling.pad_to_divisor)"
            )
        return np.ascontiguousarray(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Tumour probability x 255 (uint8, shape (N, 1, H, W)) of a uint8 NHWC RGB batch."""
        batch = self.check_input(batch)
        out = self._infer_impl(batch)
        n, h, w, _ = batch.shape
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != (n, 1, h, w):
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ModelError(self.path, f"the model returned {got}, expected uint8 {(n, 1, h, w)}")
        return out

    def infer_many(self, batches: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        """``(key, output)`` for each ``(key, batch)``, in order. Backends that can overlap data
        movement with compute (TensorRT on CUDA streams) override this; the default runs
        :meth:`infer` on each batch."""
        for key, batch in batches:
            yield key, self.infer(batch)

    @abstractmethod
    def _infer_impl(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """What ran: kind, file, device/providers — for summaries and logs."""
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256}

    def close(self) -> None:
        """Release the model (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_backend(path: str | Path, providers: str | list[Any] | None = None, device_id: int = 0,
                 **options: Any) -> Backend:
    """Load a model file: ``.onnx`` on ONNX Runtime, ``.plan``/``.engine`` on TensorRT, or a
    folder of plans (the one built for this GPU, :func:`tseg.runtime.execution.backends.tensorrt.select_plan`)."""
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

            return TensorRTBackend(p, device_id=device_id, **options)
        raise ModelError(p, "is a folder without .plan engines; give an .onnx model, a .plan engine file, or a "
                            "folder of plans of one model built for several GPU types")
    suffix = p.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        from tseg.runtime.execution.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(p, device_id=device_id, **options)
    if suffix in ONNX_SUFFIXES:
        from tseg.runtime.execution.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(p, providers=providers, device_id=device_id, **options)
    raise ModelError(p, f"unknown model file type '{suffix}': expected .onnx (ONNX Runtime) or .plan (TensorRT)")
