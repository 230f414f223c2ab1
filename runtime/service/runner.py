"""The job runner: one worker thread per device, each with the engine loaded once.

Each worker loads a :class:`~tseg.runtime.execution.segmenter.Segmenter` on its device, warms it up
with one small tile (readiness means "loaded and warmed up", as Triton's), then takes the oldest
due job from the :class:`~tseg.runtime.service.store.JobStore` and runs it through
:func:`tseg.runtime.cohort.runner.run_slide` — the result folders, per-slide locks, atomic outputs
and resume rules of ``tseg-rt run``, nothing reimplemented — with the job's options applied to the
loaded model (``Segmenter.with_settings``: no reload: thresholds, resolution, the overlay's style
and opacity) and, when the job's ``dicom_out`` is on, the service's DICOM settings
(``run_slide(dicom=...)``: the objects are made, and stored with ``--stow``, under the slide's lock).

What a job becomes:

* finished, skipped or post-processed again -> ``success`` (a cancel that came after the last
  tile is too late: the result is complete and kept);
* failed -> ``failure`` with a code from the exception (:func:`error_code`) and its message; the
  failure is recorded for the cohort report (:func:`tseg.runtime.cohort.report.record_outcome`);
* cancelled by a client -> ``cancelled`` at the next tile (partial outputs removed);
* the service stopping -> back to ``pending`` (its partial outputs removed), run again on start;
* its slide locked by another process (a ``tseg-rt run`` on the same results folder) -> back to
  ``pending`` for a few seconds; two jobs of this service never run one slide at once
  (:meth:`~tseg.runtime.service.store.JobStore.claim`).

Progress (stage, tiles done / total, time to first tile) is kept in memory while a job runs and
written to the store when it ends. Stages: ``queued``, ``preparing`` (identity, resume decision,
overview, background), ``inference`` (tiles), ``writing`` (post-processing and outputs), ``done``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.service.metrics import Metrics
from tseg.runtime.service.paths import PathRefused, Roots
from tseg.runtime.service.store import Job, JobStore
from tseg.runtime.wsi.limits import MAX_SLIDE_MM

log = logging.getLogger(__name__)

#: Exception class -> the error code a failed job carries (others: the class name in snake case).
ERROR_CODES = {
    "SlideNotFoundError": "slide_not_found", "UnsupportedSlideError": "unsupported_slide",
    "MissingMppError": "missing_mpp", "ImplausibleMppError": "implausible_mpp", "ResolutionError": "resolution",
    "SlideReadError": "slide_read_error", "SlideError": "slide_error", "ModelError": "model_error",
    "ContractError": "model_error", "EngineMismatchError": "model_error", "DeviceError": "device_error",
    "BackendUnavailableError": "backend_unavailable", "OutputError": "output_error",
    "SlideLockedError": "output_error", "InvalidArgumentError": "invalid_options", "MemoryError": "out_of_memory",
    "OSError": "io_error", "FileNotFoundError": "io_error", "PermissionError": "io_error", "IsADirectoryError": "io_error",
}
LOCKED_RETRY_S = 5.0
SUMMARY_KEYS = ("areas", "tiles", "timings_s", "warnings", "dicom")


def error_code(error_type: str) -> str:
    """The code of a failure from its exception's class name (``MissingMppError`` -> ``missing_mpp``)."""
    if error_type in ERROR_CODES:
        return ERROR_CODES[error_type]
    if error_type == "TsegError":
        return "failed"
    if error_type.endswith("Error"):
        return re.sub(r"(?<!^)(?=[A-Z])", "_", error_type).lower()
    return "internal_error"  # no type, or not an error class (KeyboardInterrupt, ...)


@dataclass(frozen=True)
class EngineSpec:
    """What every worker loads: the model, ONNX Runtime providers, the devices (one worker per
    device; none: one worker on device 0 or the CPU) and per-process reading resources."""

    engine: str | None
    providers: str | list[Any] = "auto"
    devices: tuple[int, ...] = ()
    reader_threads: int | None = None
    max_slide_mm: float = MAX_SLIDE_MM


@dataclass
class Running:
    """A job being processed (in memory)."""

    job: Job
    worker: str
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # "user" or "shutdown" once cancelled
    stage: str = "preparing"
    tiles_done: int = 0
    tiles_total: int | None = None
    t0: float = field(default_factory=time.perf_counter)
    first_tile_s: float | None = None

    def progress(self) -> dict[str, Any]:
        return {"stage": self.stage, "tiles_done": self.tiles_done, "tiles_total": self.tiles_total,
                "seconds": round(time.perf_counter() - self.t0, 3), "first_tile_s": self.first_tile_s,
                "worker": self.worker}


class Worker(threading.Thread):
    """One device: loads the engine, warms it up, then runs jobs until the runner stops."""

    def __init__(self, runner: "JobRunner", device: int | None) -> None:
        self.device = device
        label = f"device {device}" if device is not None else "cpu"
        super().__init__(name=f"tseg-worker-{label.replace(' ', '')}", daemon=True)
        self.label = label
        self.runner = runner
        self.state = "loading"  # loading | ready | failed | stopped
        self.error: str | None = None
        self.backend: dict[str, Any] = {}
        self.warmup_s: float | None = None
        self.segmenter: Any = None
        self.default_thresholds: tuple[int, int] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "device": self.device, "state": self.state, "error": self.error,
                "backend": self.backend, "warmup_s": self.warmup_s}

    def _load(self) -> None:
        from tseg.runtime.execution.segmenter import Segmenter

        spec = self.runner.spec
        t0 = time.perf_counter()
        self.segmenter = Segmenter(spec.engine, providers=spec.providers, device_id=self.device or 0,
                                   reader_threads=spec.reader_threads, max_slide_mm=spec.max_slide_mm)
        c = self.segmenter.contract
        size = max(c.divisor, (min(512, c.tile_size) // c.divisor) * c.divisor)
        self.segmenter.backend.infer(np.zeros((1, size, size, 3), np.uint8))  # warm-up (first-call costs)
        self.warmup_s = round(time.perf_counter() - t0, 3)
        self.backend = self.segmenter.backend.describe()
        self.default_thresholds = (self.segmenter.low, self.segmenter.high)

    def run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # a model that cannot load on this device: the service reports it
            self.state, self.error = "failed", (exc.cli_message() if isinstance(exc, TsegError) else repr(exc))
            log.error("%s: cannot load the engine: %s", self.label, self.error)
            self.runner.worker_failed(self)
            return
        self.state = "ready"
        log.info("%s: engine ready (%s, warm-up %.2f s)", self.label, self.backend.get("kind"), self.warmup_s)
        self.runner.worker_ready(self)
        try:
            while not self.runner.stopping.is_set():
                job = self.runner.store.claim(f"{self.label}")
                if job is None:
                    self.runner.wait_for_work()
                    continue
                if self.runner.stopping.is_set():  # the stop came while claiming: nothing new starts
                    self.runner.store.requeue(job.id, 0.0, None, started=False)
                    break
                self.runner.execute(self, job)
        finally:
            self.state = "stopped"
            try:
                self.segmenter.close()
            except Exception:  # closing a backend must not hide why the thread ended
                log.debug("%s: error closing the backend", self.label, exc_info=True)


class JobRunner:
    """Runs the store's jobs on one worker per device (see the module docstring)."""

    def __init__(self, store: JobStore, out: Path, spec: EngineSpec, roots: Roots | None = None,
                 metrics: Metrics | None = None, on_job_done: Callable[[Job], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None, poll_s: float = 1.0, dicom: Any = None) -> None:
        self.store = store
        self.out = Path(out)
        self.spec = spec
        self.roots = roots
        self.metrics = metrics or Metrics()
        self.on_job_done = on_job_done
        self.on_fatal = on_fatal
        self.poll_s = poll_s
        self.dicom = dicom  # DicomOptions of the service (jobs with options.dicom_out use them)
        self.stopping = threading.Event()
        self._work = threading.Condition()
        self._running: dict[str, Running] = {}
        self._lock = threading.Lock()
        devices: Sequence[int | None] = list(spec.devices) or [None]
        self.workers = [Worker(self, d) for d in devices]

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for w in self.workers:
            w.start()

    @property
    def ready(self) -> bool:
        """Every worker loaded and warmed up."""
        return all(w.state == "ready" for w in self.workers)

    def default_thresholds(self) -> tuple[int, int] | None:
        return next((w.default_thresholds for w in self.workers if w.default_thresholds), None)

    def worker_ready(self, worker: Worker) -> None:
        self.metrics.set_ready(self.ready)

    def worker_failed(self, worker: Worker) -> None:
        self.metrics.set_ready(False)
        if self.on_fatal is not None:
            self.on_fatal(f"{worker.label}: cannot load the engine: {worker.error}")

    def begin_stop(self) -> None:
        """Take no more jobs; running jobs stop at their next tile and go back to ``pending``
        (returns at once: :meth:`stop` waits for them)."""
        self.stopping.set()
        with self._lock:
            for r in self._running.values():
                r.reason = r.reason or "shutdown"
                r.cancel.set()
        self.wake()

    def stop(self, timeout_s: float = 60.0) -> None:
        """:meth:`begin_stop`, then wait up to ``timeout_s`` for the workers to end."""
        self.begin_stop()
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            if w.ident is None:
                continue  # never started
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                log.warning("%s did not stop within %.0f s; its job is requeued on the next start", w.label, timeout_s)

    # --- the queue -----------------------------------------------------------------------------

    def wake(self) -> None:
        """New work (a submission): wake the idle workers."""
        with self._work:
            self._work.notify_all()

    def wait_for_work(self) -> None:
        due = self.store.next_due()
        wait = self.poll_s if due is None else min(self.poll_s, max(0.01, due - time.time()))
        with self._work:
            if not self.stopping.is_set():
                self._work.wait(wait)

    def cancel(self, job_id: str) -> bool:
        """Stop a running job at its next tile (True if it runs here)."""
        with self._lock:
            r = self._running.get(job_id)
            if r is None:
                return False
            r.reason = r.reason or "user"
            r.cancel.set()
            return True

    def progress(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._running.get(job_id)
            return r.progress() if r is not None else None

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def idle(self) -> bool:
        return self.running() == 0 and self.store.counts()["pending"] == 0

    # --- one job -------------------------------------------------------------------------------

    def execute(self, worker: Worker, job: Job) -> None:
        """Run one claimed job to its next state (never raises: every error ends the job)."""
        from tseg.runtime.cohort.runner import run_slide

        r = Running(job, worker.label)
        with self._lock:
            self._running[job.id] = r
        if job.cancel_requested:  # cancelled between claim and here
            r.reason = "user"
            r.cancel.set()
        elif self.stopping.is_set():  # the service began stopping between claim and here
            r.reason = "shutdown"
            r.cancel.set()
        self.metrics.job_started(time.time() - job.submitted_at)
        log.info("job %s: %s on %s", job.id, job.slide, worker.label)

        def on_plan(n: int) -> None:
            r.tiles_total, r.stage = n, "inference"

        def on_tile(index: int, was_run: bool) -> None:
            if r.first_tile_s is None:
                r.first_tile_s = round(time.perf_counter() - r.t0, 4)
                self.metrics.first_tile(r.first_tile_s)
            r.tiles_done += 1
            if was_run:
                self.metrics.tile(worker.label)
            if r.tiles_total is not None and r.tiles_done >= r.tiles_total:
                r.stage = "writing"

        try:
            if self.roots is not None:
                self.roots.resolve(job.slide)  # again: the file system may have changed since submission
            options = SlideOptions.from_mapping(job.options)
            if options.dicom_out and self.dicom is None:
                raise InvalidArgumentError(f"{job.slide}: the job asks for DICOM objects (dicom_out), but the service "
                                           "now runs without --dicom-out; restart it with --dicom-out or submit "
                                           "the slide again")
            outcome = run_slide(worker.segmenter, Path(job.slide), self.out, job.overwrite,
                                overrides=options.segmenter_settings(), on_tile=on_tile, on_plan=on_plan,
                                cancel=r.cancel, dicom=self.dicom if options.dicom_out else None)
            final = self._conclude(job, r, outcome)
        except PathRefused as exc:
            final = self.store.finish(job.id, "failure", error_code=exc.code, error_message=str(exc))
        except InvalidArgumentError as exc:
            final = self.store.finish(job.id, "failure", error_code="invalid_options", error_message=str(exc))
        except Exception as exc:  # a bug: the job fails, the service goes on
            log.error("job %s: unexpected error", job.id, exc_info=exc)
            final = self.store.finish(job.id, "failure", error_code="internal_error",
                                      error_message=f"{job.slide}: unexpected error: {exc!r}")
        finally:
            with self._lock:
                self._running.pop(job.id, None)
        if final is not None:
            self.metrics.job_finished(final.state, time.perf_counter() - r.t0)
            if final.state == "failure":
                log.warning("job %s: failed (%s): %s", job.id, final.error_code, final.error_message)
            else:
                log.info("job %s: %s%s", job.id, final.state, f" ({final.outcome})" if final.outcome else "")
            if self.on_job_done is not None:
                self.on_job_done(final)

    def _conclude(self, job: Job, r: Running, outcome: Any) -> Job | None:
        """The job's next state from the slide's outcome (None when it went back to the queue)."""
        from tseg.runtime.cohort.report import record_outcome

        tiles = (r.tiles_done if r.tiles_total is not None else None, r.tiles_total)
        if outcome.status == "locked":
            if r.reason == "user":
                return self.store.finish(job.id, "cancelled", error_code="cancelled",
                                         error_message="cancelled while waiting for its slide's lock")
            self.store.requeue(job.id, LOCKED_RETRY_S if r.reason is None else 0.0, f"waiting: {outcome.detail}")
            return None
        if not outcome.ok and r.reason == "shutdown":
            self.store.requeue(job.id, 0.0, "requeued: the service stopped while processing it")
            return None
        if not outcome.ok and r.reason == "user":
            return self.store.finish(job.id, "cancelled", error_code="cancelled", tiles=tiles,
                                     error_message="cancelled while running; its partial outputs were removed")
        try:
            record_outcome(self.out, outcome)
        except (TsegError, OSError) as exc:
            log.warning("could not record the outcome of %s for the cohort report: %s", job.slide, exc)
        if not outcome.ok:
            return self.store.finish(job.id, "failure", error_code=error_code(outcome.error_type), tiles=tiles,
                                     error_message=outcome.error_cli or outcome.error or outcome.detail,
                                     result_folder=None, first_tile_s=r.first_tile_s)
        summary = outcome.summary or self._saved_summary(outcome.name)
        detail = outcome.detail or None
        if r.reason == "user":
            detail = "; ".join(filter(None, [detail, "the cancel came after the result was complete"]))
        return self.store.finish(job.id, "success", outcome=outcome.status, result_folder=outcome.name, detail=detail,
                                 summary={k: summary[k] for k in SUMMARY_KEYS if k in summary}, tiles=tiles,
                                 first_tile_s=r.first_tile_s)

    def _saved_summary(self, name: str) -> dict[str, Any]:
        from tseg.runtime.outputs.summary import read_summary

        try:
            return read_summary(self.out / name) or {}
        except TsegError:
            return {}
