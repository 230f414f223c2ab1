"""The two local runners of a batch: slides one after another in this process, or in a pool of
worker processes, each loading its own backend (one per GPU with ``devices``).

Both run :func:`tseg.runtime.cohort.runner.run_slide` and record every outcome in the batch's
:class:`~tseg.runtime.cohort.outcomes.Ledger`; a slide whose lock another live process holds is
put back and waited for at the end (``wait_for_locks``). Ctrl-C, and SIGTERM where the command
line turned it into :class:`~tseg.runtime.util.signals.Terminated`, raise
:class:`~tseg.runtime.cohort.outcomes.BatchInterrupted` (workers are passed the signal, or get
it from a scheduler that signals every process of a job, and remove their partial outputs).
Each outcome names its worker (:func:`tseg.runtime.cohort.worker.describe_worker`).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tseg.runtime.cohort.outcomes import Ledger, SlideOutcome
from tseg.runtime.cohort.locks import describe_holder
from tseg.runtime.cohort.identity import result_stem, slide_stem
from tseg.runtime.cohort.runner import run_slide
from tseg.runtime.wsi.locator import as_slide, slide_exists
from tseg.runtime.cohort.worker import describe_worker
from tseg.runtime.util.signals import stop_once

log = logging.getLogger(__name__)


def run_here(slides: Sequence[Path], out: Path, ledger: Ledger, segmenter: Any, *,
             per_slide: Mapping[str, Mapping[str, Any]], overwrite: bool, wait_for_locks: bool,
             dicom: Any = None) -> None:
    """Process ``slides`` one after another in this process with ``segmenter``; progress goes to
    ``ledger.events``."""
    events = ledger.events

    def waiting(slide: Path) -> Callable[[dict[str, Any] | None], None]:
        def note(holder: dict[str, Any] | None) -> None:
            text = f"{slide}: waiting for {describe_holder(holder)}, which is processing it"
            log.warning(text)
            events.lock_wait(slide, describe_holder(holder))
        return note

    current: list[str] = []
    pending = list(slides)
    deferred: list[Path] = []

    def tile(index: int, was_run: bool) -> None:
        events.tile_done(index, was_run)
        events.tiles_done(1)

    try:
        for wait_now in (False, True):
            queue, pending = (pending, []) if not wait_now else (deferred, [])
            while queue:
                slide = queue.pop(0)
                events.slide_started(slide, result_stem(slide) if slide_exists(slide) else slide_stem(slide))
                current[:] = [str(slide)]
                outcome = run_slide(segmenter, slide, out, overwrite, wait_now, per_slide.get(str(slide)),
                                    on_tile=tile, on_plan=events.tiles_planned,
                                    on_wait=waiting(slide), dicom=dicom)
                current.clear()
                outcome.worker = describe_worker()
                if outcome.status == "locked" and not wait_now and wait_for_locks:
                    ledger.defer(slide, outcome)
                    deferred.append(slide)
                    continue
                ledger.finish(outcome)
            if not wait_for_locks:
                break
    except KeyboardInterrupt as stop:
        raise ledger.interrupted(slides, list(current), stop) from None


# --- several processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


class _Once(logging.Filter):
    """Lets each distinct message through once (workers repeat what every backend load logs)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class _ToMainHandlers(logging.Handler):
    """Hands records from the workers to this process's own loggers (same format, one stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _worker_init(engine: str | None, providers: Any, devices: list[int], counter: Any,
                 settings: dict[str, Any], log_level: int, log_queue: Any, quiet_load: bool) -> None:
    # Ctrl-C reaches the workers from the main process (_interrupt_workers), SIGTERM from a
    # scheduler that signals every process of a job, often both: the first stops the slide, the
    # other is ignored while its partial outputs are removed. (Set explicitly: a process started
    # in the background of a shell script inherits SIGINT ignored.)
    stop_once((signal.SIGINT, signal.SIGTERM))
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(log_level)
    from tseg.runtime.execution.segmenter import Segmenter

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    device = devices[index % len(devices)] if devices else 0
    previous = root.level
    if quiet_load:  # the main process loaded the same model and reported its warnings already
        root.setLevel(logging.ERROR)
    try:
        _WORKER["segmenter"] = Segmenter(engine, providers=providers, device_id=device, **settings)
    finally:
        root.setLevel(previous)


def _worker_run(slide: str, out: str, overwrite: bool, wait_for_lock: bool,
                overrides: dict[str, Any] | None, dicom: Any = None) -> SlideOutcome:
    outcome = run_slide(_WORKER["segmenter"], as_slide(slide), Path(out), overwrite, wait_for_lock, overrides,
                        dicom=dicom)
    outcome.worker = describe_worker()
    return outcome


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """Pass Ctrl-C on to the workers so that they remove their partial outputs."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(proc.pid, signal.SIGINT)
        except OSError:
            pass


def run_in_processes(slides: Sequence[Path], out: Path, ledger: Ledger, *, workers: int, engine: str | None,
                     providers: Any, devices: Sequence[int], settings: Mapping[str, Any],
                     per_slide: Mapping[str, Mapping[str, Any]], overwrite: bool, wait_for_locks: bool,
                     quiet_worker_load: bool = False, dicom: Any = None) -> None:
    """Process ``slides`` in ``workers`` spawned processes, each loading its own backend from
    ``engine`` (device ``devices[i % len(devices)]``); their log records come back to this
    process's handlers, each distinct message once."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    log_queue = ctx.Queue()
    forward = _ToMainHandlers()
    forward.addFilter(_Once())
    listener = logging.handlers.QueueListener(log_queue, forward)
    listener.start()
    running: dict[Any, Path] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(engine, providers, list(devices), counter, dict(settings),
                                         logging.getLogger().level, log_queue, quiet_worker_load))
    try:
        deferred = []
        for wait_now in (False, True):
            batch = list(slides) if not wait_now else deferred
            if wait_now:
                for slide in batch:
                    log.info("%s: waiting for the process that holds its lock", slide)
            for slide in batch:
                future = pool.submit(_worker_run, str(slide), str(out), overwrite, wait_now,
                                     per_slide.get(str(slide)), dicom)
                running[future] = slide
            deferred = []
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    slide = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # a worker died or failed to load the engine
                        text = f"{slide}: worker failed: {exc}"
                        outcome = SlideOutcome(str(slide), slide_stem(slide), "failed", text, error_cli=text)
                    if outcome.status == "locked" and not wait_now and wait_for_locks:
                        ledger.defer(slide, outcome)
                        deferred.append(slide)
                        continue
                    if outcome.summary.get("tiles"):
                        ledger.events.tiles_done(int(outcome.summary["tiles"].get("tiles_total", 0)))
                    ledger.finish(outcome)
            if not wait_for_locks or not deferred:
                break
    except KeyboardInterrupt as stop:
        _interrupt_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        in_progress = [str(s) for f, s in running.items() if f.running() or f.done()]
        raise ledger.interrupted(slides, in_progress, stop) from None
    finally:
        pool.shutdown(wait=True)
        listener.stop()
