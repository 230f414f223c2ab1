"""The workers of a Ray batch: what each loads (checked first on the driver), and the actor.

One long-lived actor per GPU (``num_gpus=1``) for TensorRT plans, for ONNX Runtime's
``cuda``/``tensorrt`` providers, and for ``auto`` providers on a cluster with GPUs
(:func:`uses_gpus`); otherwise one per CPU worker. Each actor loads the backend once, in its
constructor, and processes slides one at a time with
:func:`tseg.runtime.cohort.runner.run_slide`: the same result folders, locks, temporary folders
and resume decisions as a local run. It returns only the outcome and the log records of its
work (and its tile count) to the driver. Progress and cancel calls run in their own concurrency group
(:data:`CONTROL`), so they are answered while a slide is processed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Mapping

from tseg.runtime.cohort.runner import run_slide
from tseg.runtime.errors import TsegError

CONTROL = "control"  # the actors' concurrency group for progress and cancel calls


def check_model(engine: str | None, providers: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check, on the driver, what the workers will load, before any slide runs: an ONNX model is
    loaded on the CPU with the settings (then closed); a plan or a folder of plans, which need a
    GPU the driver may not have, by their manifests. Returns what the model line shows."""
    from tseg.runtime.execution.backends.base import ENGINE_SUFFIXES
    from tseg.runtime.method.postprocess import check_thresholds

    p = Path(engine) if engine is not None else None
    if p is not None and (p.suffix.lower() in ENGINE_SUFFIXES or p.is_dir()):
        from tseg.runtime.execution.engine_manifest import read_manifest

        from tseg.runtime.execution.backends.tensorrt_loader import plans_in
        from tseg.runtime.errors import ModelError, ModelNotFoundError

        if not p.exists():
            raise ModelNotFoundError(p, "no such engine file or folder")
        if p.is_dir():
            plans = plans_in(p)
            if not plans:
                raise ModelError(p, "is a folder without .plan engines; give an .onnx model, a .plan engine, or a "
                                    "folder of plans of one model built for several GPU types")
            manifests = [read_manifest(q, verify=False) for q in plans]
            models = {str((m.onnx or {}).get("sha256")) for m in manifests}
            if len(models) > 1:
                raise ModelError(p, "the plans come from different ONNX models: keep the plans of one model in a "
                                    "folder, so every GPU runs the same model")
        else:
            manifests = [read_manifest(p)]
        contract = manifests[0].model_contract
        check_thresholds(settings.get("low") if settings.get("low") is not None else contract.low_threshold,
                         settings.get("high") if settings.get("high") is not None else contract.high_threshold)
        gpus = sorted({f"{m.gpu.get('name')} ({m.gpu.get('compute_capability')})" for m in manifests})
        return {"kind": "tensorrt", "path": str(p), "providers": gpus}
    from tseg.runtime.execution.segmenter import Segmenter

    with Segmenter(engine, providers="cpu", **dict(settings)) as segmenter:
        info = segmenter.backend.describe()
    info["providers"] = [str(providers)] if isinstance(providers, str) else [str(x) for x in providers or []]
    return info


class _Capture(logging.Handler):
    """Keeps the records logged in an actor, to return them to the driver with each answer."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, int, str]] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in some library: keep going
            text = str(record.msg)
        with self._lock2:
            self.records.append((record.name, record.levelno, text))

    def drain(self) -> list[tuple[str, int, str]]:
        with self._lock2:
            out, self.records = self.records, []
        return out


class SlideWorker:
    """One worker of a Ray batch: a loaded backend, and slides processed one at a time."""

    def __init__(self, engine: str | None, providers: Any, settings: Mapping[str, Any], log_level: int,
                 index: int, quiet_load: bool = False) -> None:
        from tseg.runtime.execution.segmenter import Segmenter

        self.index = index
        self.backend_loads = 0
        self.slides = 0
        self._tiles = 0
        self._current: str | None = None
        self._cancel = threading.Event()
        self._capture = _Capture()
        root = logging.getLogger()
        root.addHandler(self._capture)
        root.setLevel(log_level)
        self.error: str | None = None
        self.segmenter: Any = None
        if quiet_load:  # the driver checked the same model and reported its warnings already
            root.setLevel(logging.ERROR)
        try:
            self.segmenter = Segmenter(engine, providers=providers, device_id=0, **dict(settings))
            self.backend_loads += 1
        except TsegError as exc:
            self.error = exc.cli_message()
        except Exception as exc:  # a library error on this node: report it, the driver decides
            logging.getLogger(__name__).error("worker %s could not load %s", self.label(), engine, exc_info=exc)
            self.error = f"{engine}: cannot load the model: {exc!r}"
        finally:
            root.setLevel(log_level)

    def label(self) -> str:
        try:
            import ray

            gpus = [str(g) for g in ray.get_gpu_ids()]
        except Exception:
            gpus = []
        return f"{socket.gethostname()} pid {os.getpid()}" + (f" GPU {','.join(gpus)}" if gpus else "")

    def ready(self) -> dict[str, Any]:
        """Who this worker is, what it loaded, or why it refused."""
        backend = self.segmenter.backend.describe() if self.segmenter is not None else None
        return {"label": self.label(), "error": self.error, "backend": backend, "logs": self._capture.drain()}

    def process(self, slide: str, out: str, overwrite: bool, wait_for_lock: bool,
                overrides: Mapping[str, Any] | None) -> tuple[Any, list[tuple[str, int, str]], int]:
        """Process one slide: ``(outcome, log records, tiles)``, where ``tiles`` is the number of
        tiles this slide finished on this worker. The driver counts a slide's last tiles from it
        (the progress calls may not be answered before the batch ends), not from :meth:`progress`."""
        self._cancel.clear()
        self._current = slide
        before = self._tiles

        def tile(index: int, was_run: bool) -> None:
            self._tiles += 1

        try:
            outcome = run_slide(self.segmenter, Path(slide), Path(out), overwrite, wait_for_lock,
                                dict(overrides) if overrides else None, on_tile=tile, cancel=self._cancel)
        finally:
            self._current = None
        outcome.worker = self.label()
        self.slides += 1
        return outcome, self._capture.drain(), self._tiles - before

    def progress(self) -> dict[str, Any]:
        """Tiles finished since this worker started, and the slide it is on (control group)."""
        return {"tiles": self._tiles, "slide": self._current}

    def cancel(self) -> None:
        """Stop the slide being processed (control group): its partial outputs are removed."""
        self._cancel.set()

    def stats(self) -> dict[str, Any]:
        """How many times the backend was loaded and how many slides this worker processed."""
        return {"backend_loads": self.backend_loads, "slides": self.slides, "pid": os.getpid(),
                "label": self.label()}


def worker_class(ray: Any) -> Any:
    """:class:`SlideWorker` as a Ray actor class (progress and cancel in their own group)."""
    return ray.remote(concurrency_groups={CONTROL: 2}, max_restarts=0, max_task_retries=0)(SlideWorker)


def uses_gpus(engine: str | None, providers: Any, cluster_gpus: float) -> bool:
    """Whether workers take one GPU each: TensorRT plans (a file or a folder of plans), CUDA or
    TensorRT providers of ONNX Runtime, or ``auto`` providers on a cluster that has GPUs."""
    from tseg.runtime.execution.backends.base import ENGINE_SUFFIXES

    if engine is not None:
        p = Path(engine)
        if p.suffix.lower() in ENGINE_SUFFIXES or (p.is_dir() and any(q.suffix.lower() in ENGINE_SUFFIXES
                                                                      for q in p.iterdir())):
            return True
    names = [providers] if isinstance(providers, str) or providers is None else list(providers)
    names = [str(n).lower() for n in names if n is not None]
    if any(n in ("cuda", "tensorrt") or n.startswith(("cudaexecution", "tensorrtexecution")) for n in names):
        return True
    if any(n == "cpu" or n.startswith("cpuexecution") for n in names):
        return False
    return cluster_gpus > 0
