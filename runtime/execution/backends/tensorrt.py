"""TensorRT backend, the runner (Polygraphy's ``TrtRunner(engine)``): an engine loaded by
:func:`~tseg.runtime.execution.backends.tensorrt_loader.load_engine` (plan, manifest, device
and I/O checked there), run on CUDA streams.

* Tensors are bound by name: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.
* Tiles are run one at a time (batch 1: the engine's profile, docs/gpus.md) through the
  :class:`~tseg.runtime.execution.executor.DoubleBufferedExecutor`, so the copies of neighbouring tiles
  overlap each tile's compute when the pipeline streams tiles through :meth:`infer_many`.
* Edge tiles smaller than 7680² run at their own (divisor-padded) size, inside the profile's
  range — TensorRT handles dynamic shapes without extra compute, so padding them to 7680² would
  only waste time. A tile smaller than the profile's minimum side is zero-padded up to it (as
  the paper pads to the divisor) and the output cropped; one larger than the maximum is refused.

Calls are serialised with a lock (one execution context); each call makes the backend's device
current on the calling thread first, so a backend built on one thread can be called from others
(the :class:`~tseg.runtime.execution.segmenter.Segmenter` is thread-safe). Run one backend per GPU, as
``tseg-rt run --devices`` does.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from tseg.runtime.errors import DeviceError, InvalidArgumentError, ModelError
from tseg.runtime.execution.backends.base import Backend
from tseg.runtime.execution.backends.tensorrt_loader import LoadedEngine, load_engine


class TensorRTBackend(Backend):
    """The runner of a loaded engine (``load_backend`` and :meth:`from_path` load it first)."""

    kind = "tensorrt"

    def __init__(self, engine: LoadedEngine) -> None:
        """Run ``engine`` (from :func:`~tseg.runtime.execution.backends.tensorrt_loader.load_engine`):
        one execution context and a double-buffered executor sized for the profile's largest tile."""
        from tseg.runtime.execution.executor import DoubleBufferedExecutor

        super().__init__(engine.path, engine.manifest.model_contract)
        self._sha256 = engine.manifest.plan_sha256
        self.manifest = engine.manifest
        self.plan_folder = engine.plan_folder
        self.equivalent_sha256 = engine.equivalent_sha256
        self.device_id = engine.device_id
        self._api = engine.api
        self._logger = engine.logger
        self._runtime = engine.runtime
        self._engine = engine.engine
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelError(engine.path, "TensorRT could not create an execution context (out of GPU memory?)")
        self.min_side = int(engine.manifest.profile["min"][1])
        self.max_side = int(engine.manifest.profile["max"][1])
        max_in = self.max_side * self.max_side * 3
        self._executor = DoubleBufferedExecutor(self._api, max_in, max_in // 3, self._compute,
                                                lambda s: (s[0], 1, s[1], s[2]))
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path, device_id: int = 0) -> "TensorRTBackend":
        """Load ``path`` (a plan, or a folder of plans) on ``device_id`` and run it."""
        return cls(load_engine(path, device_id))

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
