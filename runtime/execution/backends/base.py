"""The one small interface every backend implements (Polygraphy's ``BaseRunner``): a model
loaded from a path, carrying its contract, with input and output checking in the base class;
subclasses implement ``_infer_impl`` only."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from tseg.runtime.errors import InvalidArgumentError, ModelError
from tseg.runtime.execution.contract import ModelContract

ONNX_SUFFIXES = {".onnx"}
ENGINE_SUFFIXES = {".plan", ".engine", ".trt"}


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
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
