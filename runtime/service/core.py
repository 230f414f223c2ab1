"""What a running service holds, and the operations its HTTP API (and hot folders) call.

:class:`Service` owns, for one results folder: the service lock (one ``serve`` or ``watch`` per
results folder, ``OUT/.tseg-service/service.lock``; a ``tseg-rt run`` into the same folder is fine:
per-slide locks keep them apart), the job store, the roots, the runner, the report writer and any
hot folders. Every HTTP route calls one method here; nothing here knows about HTTP.

Decisions where the issue was silent:

* A job's options are complete: the client's options over the service's defaults (its flags), so
  the store compares whole option sets and a later change of the defaults does not change queued
  jobs. Submitting a slide with the same options while an equal job is pending or running
  returns that job (``how="active"``); after it finished, a new job is made and the resume rules
  decide (usually: skipped in milliseconds, "finished with these settings").
* A job's slide, result folder and messages are shown with control characters, bidirectional
  overrides and bytes that are not UTF-8 escaped (``\\x1b``, ``\\u202e``, ``\\xff``), as in the logs
  (:func:`~tseg.runtime.util.display.printable`); the store keeps the name as it is.
* Results are served from the slide's result folder as it is now. If a later job changed it
  (other thresholds post-process the same folder again) or it is gone, the older job's results
  are refused with :class:`ResultGone` instead of serving another job's files.
* Finished jobs are forgotten after ``keep_days`` (their result folders stay).
* DICOM outputs are settings of the service (``--dicom-out``, ``--dicom-wsi``, ``--dicom-metadata``,
  ``--stow``: :attr:`ServiceConfig.dicom`), not of a request: a request cannot name a STOW server
  or a metadata file (no request may make the service send data elsewhere or read other files).
  A job may only turn them off or on (``options.dicom_out``, default: on when the service has
  them); asking for them from a service started without them is refused (``invalid_options``).
  A job's results list its ``dicom/`` files (``dicom/manifest.json``, ``dicom/tumour-seg-0.dcm``,
  ...) after the result files, each with a URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.errors import InvalidArgumentError, OutputError, TsegError
from tseg.runtime.service.metrics import Metrics
from tseg.runtime.service.paths import Roots
from tseg.runtime.service.reporter import ReportWriter
from tseg.runtime.service.runner import EngineSpec, JobRunner
from tseg.runtime.service.store import STATE_DIR, STATES, Job, JobStore, Submitted
from tseg.runtime.util.display import printable
from tseg.runtime.wsi.limits import MAX_SLIDE_MM

log = logging.getLogger(__name__)

SERVICE_LOCK = "service.lock"
#: ``--max-queued`` unless given: far more than a scanner room queues, far fewer than a runaway
#: client (or a loop) would.
DEFAULT_MAX_QUEUED = 1000
SERVICE_FILE = "service.json"


class JobNotFound(TsegError):
    """No job has this id."""


class JobConflict(TsegError):
    """The job is not in a state that allows this (cancel a finished job, results of a running one)."""


class ResultGone(TsegError):
    """The job's result folder was removed or changed by a later job, or a file in it is not
    what tseg-rt wrote (a symbolic link, a FIFO)."""


class ResultFileNotFound(TsegError):
    """The job exists and has a result, but not this file (a name tseg-rt does not write, or an
    output its run did not make)."""


@dataclass(frozen=True)
class HotFolderConfig:
    """A folder watched for new slides (:mod:`tseg.runtime.service.watch`)."""

    folder: Path
    settle_s: float = 30.0
    poll_s: float = 2.0


@dataclass
class ServiceConfig:
    """Everything a service is started with (the command line's options)."""

    out: Path
    roots: Sequence[Path] = ()
    engine: str | None = None
    providers: str | list[Any] = "auto"
    devices: Sequence[int] = ()
    reader_threads: int | None = None
    #: Slides whose metadata claims a side longer than this (mm) are refused before pixels are read.
    max_slide_mm: float = MAX_SLIDE_MM
    defaults: SlideOptions = field(default_factory=SlideOptions)
    report: bool = True
    report_interval_s: float = 30.0
    max_interruptions: int = 3
    keep_days: float | None = 90.0
    hot_folders: Sequence[HotFolderConfig] = ()
    retry_failed: bool = False
    #: DICOM outputs (:class:`~tseg.runtime.outputs.dicom_export.DicomOptions`); None: none.
    dicom: Any = None
    #: Pending jobs beyond which API submissions are refused (429); None: no limit. Hot-folder
    #: slides are not limited (the folder bounds them).
    max_queued: int | None = DEFAULT_MAX_QUEUED


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def dicom_files(folder: Path) -> dict[str, Path]:
    """A result folder's DICOM files by their name in the API (``dicom/...``, sorted): plain files
    only, never through a symbolic link, so nothing outside the result can be served."""
    from tseg.runtime.outputs.dicom_export import DICOM_FOLDER

    top = folder / DICOM_FOLDER
    if top.is_symlink() or not top.is_dir():
        return {}
    found: dict[str, Path] = {}
    for base, dirs, names in os.walk(top):  # os.walk does not follow links to folders
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            path = Path(base) / n
            if not n.startswith(".") and not path.is_symlink() and path.is_file():
                found[path.relative_to(folder).as_posix()] = path
    return found


def dicom_settings(dicom: Any) -> dict[str, Any] | None:
    """What ``/v1/info`` says about the DICOM outputs (no credentials: only whether a file names them)."""
    if dicom is None:
        return None
    return {"convert_slide": dicom.convert_slide, "stow_url": dicom.stow_url,
            "credentials_file": dicom.credentials_file is not None, "site_metadata_slides": len(dicom.site)}


class Service:
    """One results folder's service (see the module docstring). :meth:`start`, then the
    operations, then :meth:`stop`; or use it as a context manager."""

    def __init__(self, config: ServiceConfig, kind: str = "serve") -> None:
        from tseg.runtime.cohort.runner import check_output_root
        from tseg.runtime.cohort.locks import LockBusy, SlideLock, describe_holder
        from tseg.runtime.util.versions import versions

        self.config = config
        self.kind = kind
        self.out = Path(config.out)
        check_output_root(self.out)
        state = self.out / STATE_DIR
        try:
            state.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(state, f"cannot create the service's state folder: {exc.strerror or exc}") from exc
        try:
            self._lock = SlideLock(state / SERVICE_LOCK, {"service": kind})
        except LockBusy as busy:
            raise OutputError(self.out, f"{describe_holder(busy.holder)} already serves this results folder (one "
                                        "`tseg-rt serve` or `watch` per folder): stop it, or choose another --out") from None
        try:
            roots = list(config.roots) + [h.folder for h in config.hot_folders]
            self.roots = Roots(roots, results=self.out)
            self.store = JobStore(self.out)
            requeued, failed = self.store.requeue_interrupted(config.max_interruptions)
            if requeued or failed:
                log.warning("%d job(s) were running when the service last stopped: %d requeued, %d failed after "
                            "%d interruptions", requeued + failed, requeued, failed, config.max_interruptions)
            if config.keep_days is not None:
                forgotten = self.store.prune(config.keep_days * 86400)
                if forgotten:
                    log.info("forgot %d job(s) that finished more than %g days ago", forgotten, config.keep_days)
        except BaseException:
            self._lock.release()
            raise
        self.versions = versions()
        self.started_at = time.time()
        self.metrics = Metrics(self.versions.get("tseg-rt", ""))
        self.fatal: str | None = None
        #: Set when the service begins to stop (SIGTERM): long polls answer at once.
        self.stopping = threading.Event()
        self._on_fatal_hooks: list[Any] = []
        #: How many jobs have ended in this process: waiters (``GET /v1/jobs/{id}?wait=``) re-read
        #: their job only when it changes, instead of asking the database over and over.
        self.ended = 0
        self.reporter = ReportWriter(self.out, self._idle, config.report_interval_s) if config.report else None
        self.runner = JobRunner(self.store, self.out, EngineSpec(config.engine, config.providers, tuple(config.devices),
                                                                config.reader_threads, config.max_slide_mm),
                                roots=self.roots, metrics=self.metrics, on_job_done=self._job_done,
                                on_fatal=self._on_fatal, dicom=config.dicom)
        from tseg.runtime.service.watch import HotFolder

        self.hot_folders = [HotFolder(hot.folder, self, settle_s=hot.settle_s, poll_s=hot.poll_s,
                                      retry_failed=config.retry_failed) for hot in config.hot_folders]

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.runner.start()
        if self.reporter is not None:
            self.reporter.start()
        for hot in self.hot_folders:
            hot.start()

    def begin_stop(self) -> None:
        """The stop has been asked for (SIGTERM): take nothing new, stop running jobs at their next
        tile (back to pending) and answer long polls at once; returns at once (:meth:`stop` waits)."""
        self.stopping.set()
        for hot in self.hot_folders:
            hot.halt()
        self.runner.begin_stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the hot folders and the runner (running jobs go back to pending), write the report
        once more, close the store and release the results folder."""
        self.stopping.set()
        for hot in self.hot_folders:
            hot.stop()
        self.runner.stop(timeout_s)
        if self.reporter is not None:
            self.reporter.stop()
        self.store.close()
        (self.out / STATE_DIR / SERVICE_FILE).unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> "Service":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_fatal(self, hook: Any) -> None:
        """Call ``hook(message)`` when the service cannot go on (no device could load the engine)."""
        self._on_fatal_hooks.append(hook)

    def _on_fatal(self, message: str) -> None:
        self.fatal = message
        for hook in self._on_fatal_hooks:
            hook(message)

    def _idle(self) -> bool:
        return self.runner.idle()

    def _job_done(self, job: Job) -> None:
        self.ended += 1
        if self.reporter is not None:
            self.reporter.poke()

    def write_service_file(self, url: str, host: str, port: int) -> Path:
        """``OUT/.tseg-service/service.json``: where this service listens (for clients and tests)."""
        from tseg.runtime.util.atomic import write_text

        info = {"pid": os.getpid(), "kind": self.kind, "url": url, "host": host, "port": port,
                "started": _iso(self.started_at), "version": self.versions.get("tseg-rt")}
        return write_text(self.out / STATE_DIR / SERVICE_FILE, json.dumps(info, indent=2) + "\n")

    # --- jobs ------------------------------------------------------------------------------------

    def submit(self, path: str, options: Mapping[str, Any] | None = None, overwrite: bool = False,
               idempotency_key: str | None = None, source: str = "api",
               watch_key: str | None = None, watch_signature: str | None = None) -> Submitted:
        """Queue a slide (a path inside the roots; PathRefused otherwise) with ``options`` (only the
        fields the client set) over the service's defaults."""
        from tseg.runtime.method.postprocess import check_thresholds

        given = dict(options or {})
        request = json.dumps({"path": path, "options": given, "overwrite": bool(overwrite)}, sort_keys=True,
                             default=str)
        real = self.roots.resolve(path)
        parsed = SlideOptions.from_mapping(given, "options")
        opts = self.config.defaults.merged({k: getattr(parsed, k) for k in given}, "options")
        low, high = opts.thresholds(*(self.runner.default_thresholds() or ()))
        try:
            check_thresholds(low, high)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"options: {exc}") from None
        if opts.dicom_out and self.config.dicom is None:
            raise InvalidArgumentError("options: dicom_out: this service makes no DICOM objects; start it with "
                                       "--dicom-out (or --stow URL) to offer them")
        options_stored = {k: v + 0.0 if isinstance(v, float) else v for k, v in opts.to_dict().items()}  # -0.0 is 0.0
        sub = self.store.submit(str(real), options_stored, overwrite=overwrite, source=source,
                                idempotency_key=idempotency_key,
                                request_sha256=hashlib.sha256(request.encode()).hexdigest(),
                                watch_key=watch_key, watch_signature=watch_signature,
                                max_pending=self.config.max_queued if source == "api" else None)
        self.metrics.job_submitted(sub.how)
        if sub.how == "created":
            log.info("job %s queued: %s (%s)", sub.job.id, real, source)
            self.runner.wake()
        return sub

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (finished jobs are forgotten after {self.config.keep_days:g} days)"
                              if self.config.keep_days is not None else f"no job {job_id!r}")
        return job

    def describe(self, job: Job) -> dict[str, Any]:
        """A job as clients see it (JSON-ready)."""
        live = self.runner.progress(job.id) if job.state == "running" else None
        source = live or {"stage": job.stage, "tiles_done": job.tiles_done, "tiles_total": job.tiles_total}
        progress: dict[str, Any] = {k: source[k] for k in ("stage", "tiles_done", "tiles_total")}
        total, done = progress["tiles_total"], progress["tiles_done"]
        if total:
            progress["fraction"] = round((done or 0) / total, 4)
        else:  # no tiles (yet, or a result post-processed again without the network)
            progress["fraction"] = 1.0 if job.state == "success" else 0.0 if job.state == "running" else None
        first_tile = live["first_tile_s"] if live else job.first_tile_s
        data: dict[str, Any] = {
            "id": job.id, "state": job.state, "slide": printable(job.slide), "options": job.options, "overwrite": job.overwrite,
            "source": job.source, "submitted_at": _iso(job.submitted_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at), "queue_position": self.store.queue_position(job),
            "attempts": job.attempts, "worker": (live or {}).get("worker") or job.worker, "progress": progress,
            "time_to_first_tile_s": first_tile, "cancel_requested": job.cancel_requested,
            "detail": printable(job.detail) if job.detail else job.detail,
            "result": None, "error": None,
        }
        if job.state == "success":
            data["result"] = {"outcome": job.outcome, "folder": printable(str(job.result_folder)), **(job.summary or {}),
                              "review": self._review(job)}
        if job.error_code:
            data["error"] = {"code": job.error_code, "message": printable(job.error_message or "") or None}
        return data

    def _review(self, job: Job) -> dict[str, Any] | None:
        """The verdict on the job's result folder (None: none, or unreadable)."""
        from tseg.runtime.outputs.review import read_review

        if not job.result_folder:
            return None
        try:
            return read_review(self.out / str(job.result_folder))
        except (OutputError, OSError):
            return None

    def jobs(self, states: Sequence[str] = (), limit: int = 100, before: int | None = None) -> list[Job]:
        bad = [s for s in states if s not in STATES]
        if bad:
            raise InvalidArgumentError(f"unknown state(s) {', '.join(bad)}; states: {', '.join(STATES)}")
        return self.store.list(states, limit, before)

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending job now, a running one at its next tile; a finished one: JobConflict."""
        job = self.get(job_id)
        if job.final and job.state != "cancelled":
            raise JobConflict(f"job {job_id} has already ended ({job.state}); only pending or running jobs can be "
                              "cancelled")
        job = self.store.cancel(job_id) or job
        if job.state == "running":
            self.runner.cancel(job_id)
        else:
            self.ended += 1
        return job

    # --- results ---------------------------------------------------------------------------------

    def result_folder(self, job_id: str) -> tuple[Job, Path, dict[str, Any]]:
        """The job's result folder and its summary, when they are still this job's result."""
        from tseg.runtime.outputs.summary import read_summary

        job = self.get(job_id)
        if job.state != "success":
            raise JobConflict(f"job {job_id} is {job.state}: results exist only for jobs in state success")
        folder = self.out / str(job.result_folder)
        try:
            summary = read_summary(folder) if folder.is_dir() else None
        except TsegError:
            summary = None
        if summary is None:
            raise ResultGone(f"the result folder of job {job_id} ({job.result_folder}) is gone; submit the slide again")
        slide = (summary.get("slide") or {}).get("path")
        settings = summary.get("settings") or {}
        want = SlideOptions.from_mapping(job.options)
        low, high = want.thresholds(*(self.runner.default_thresholds() or ()))
        overlay = (settings.get("overlay_style", want.overlay_style),
                   round(float(settings.get("overlay_opacity", want.overlay_opacity)), 6))
        if slide != job.slide or (settings.get("low"), settings.get("high"), bool(settings.get("prune", True))) != (
                low, high, want.prune) or overlay != (want.overlay_style, round(float(want.overlay_opacity), 6)):
            raise ResultGone(f"the result folder of job {job_id} ({job.result_folder}) now holds a later job's result "
                             "(other slide, thresholds or overlay); submit the slide again with these options")
        return job, folder, summary

    def result_files(self, job_id: str) -> tuple[Job, list[dict[str, Any]], dict[str, Any]]:
        """The result's files with their sizes: regular files only, never through a link."""
        from tseg.runtime.outputs.files import OUTPUT_FILES
        from tseg.runtime.util.safeio import is_regular

        job, folder, summary = self.result_folder(job_id)
        files = [{"name": n, "bytes": (folder / n).lstat().st_size} for n in OUTPUT_FILES
                 if is_regular(folder / n, follow=False)]
        files += [{"name": n, "bytes": p.lstat().st_size} for n, p in dicom_files(folder).items()]
        return job, files, summary

    def result_file(self, job_id: str, name: str) -> tuple[Path, os.stat_result]:
        """One output file of a job's result (only the names tseg-rt writes, and its DICOM objects)
        and its ``stat``: a regular file reached without a symbolic link from the results folder
        (ResultGone otherwise, as for a result folder that is a link)."""
        from tseg.runtime.outputs.dicom_export import DICOM_FOLDER
        from tseg.runtime.outputs.files import OUTPUT_FILES
        from tseg.runtime.util.safeio import UnsafeFileError, open_fd

        is_dicom = name.startswith(f"{DICOM_FOLDER}/")
        if name not in OUTPUT_FILES and not is_dicom:
            raise ResultFileNotFound(f"no result file {name!r}; results are {', '.join(OUTPUT_FILES)} and the files "
                                     f"under {DICOM_FOLDER}/ listed by the job's results")
        _, folder, _ = self.result_folder(job_id)
        if is_dicom:
            found = dicom_files(folder).get(name)
            if found is None:
                raise ResultFileNotFound(f"job {job_id}'s result has no {name} (see its results listing)")
            path = found
        else:
            path = folder / name
        try:
            fd = open_fd(path, below=self.out)
        except UnsafeFileError as exc:
            raise ResultGone(f"job {job_id}'s {name} is not a file tseg-rt wrote ({exc.what}); it is not served: "
                             "submit the slide again with overwrite to make it anew") from None
        except FileNotFoundError:
            raise ResultFileNotFound(f"job {job_id}'s result has no {name} (written only when its slide's run made "
                                     "it)") from None
        except OSError as exc:
            raise ResultGone(f"job {job_id}'s {name} cannot be read ({exc.strerror or exc})") from None
        try:
            return path, os.fstat(fd)
        finally:
            os.close(fd)

    # --- health ------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.runner.ready and self.fatal is None

    def health(self) -> dict[str, Any]:
        """Readiness with its reasons: engine per device, loaded and warmed up."""
        workers = [w.describe() for w in self.runner.workers]
        reasons = [f"{w['name']}: {w['state']}" + (f" ({w['error']})" if w["error"] else "")
                   for w in workers if w["state"] != "ready"]
        return {"ready": self.ready, "reasons": reasons, "workers": workers}

    def info(self) -> dict[str, Any]:
        return {"service": self.kind, "version": self.versions.get("tseg-rt"), "versions": self.versions,
                "started": _iso(self.started_at), "results": str(self.out.resolve()), "roots": list(self.roots.folders),
                "defaults": self.config.defaults.to_dict(), "dicom": dicom_settings(self.config.dicom),
                "engine": self.health()["workers"],
                "jobs": self.store.counts(), "hot_folders": [str(h.folder) for h in self.hot_folders]}

    def metrics_text(self) -> str:
        return self.metrics.render(self.store.counts(), devices=[d for d in self.config.devices],
                                   workers=[w.label for w in self.runner.workers])
