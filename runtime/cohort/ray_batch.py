"""Batches on a Ray cluster: ``tseg-rt run SLIDES --out RESULTS --ray [auto | ADDRESS]``.

Ray (``pip install 'tseg-rt[ray]'``, ``ray>=2.40``) is imported only by this driver and its two
helpers, :mod:`~tseg.runtime.cohort.ray_cluster` (connecting) and
:mod:`~tseg.runtime.cohort.ray_worker` (the actor), and only when a batch asks for it; the rest of
the runtime never needs it.

* **Connecting.** ``auto`` joins the cluster that ``RAY_ADDRESS`` names or that ``ray start``
  started on this machine, and otherwise starts a local Ray instance for this batch (stopped at
  its end), so one command works on a laptop and on a cluster. An address (``HOST:6379``,
  ``ray://HOST:10001``) joins that cluster. A process that has called ``ray.init`` itself keeps
  its connection (the batch neither starts nor stops Ray).
* **Workers.** One long-lived actor per GPU (``num_gpus=1``) for TensorRT plans, for ONNX
  Runtime's ``cuda``/``tensorrt`` providers, and for ``auto`` providers on a cluster with GPUs;
  otherwise one actor per CPU worker (by default one per :data:`CPUS_PER_CPU_WORKER` cluster
  CPUs, spread over the nodes: ONNX Runtime uses several threads per worker). ``workers`` caps or
  sets the number. Each actor loads the backend once, in its constructor, and processes slides
  one at a time with :func:`tseg.runtime.cohort.runner.run_slide`: the same result folders, locks,
  temporary folders and resume decisions as a local run, so results are byte-identical and the
  table and exit status the same. Slides and results must be on storage that every node sees
  at the same paths (NFS, Lustre mounted with ``flock``, a mounted bucket); a worker reads its
  slide where it runs and returns only the outcome (status, summary, error) to the driver.
* **Several GPU types.** ``--engine PLANS/``, a folder of plans of one ONNX model built for
  several GPUs, lets each actor pick the plan whose manifest matches its GPU and TensorRT
  (:func:`tseg.runtime.execution.backends.tensorrt_loader.select_plan`); an actor for which none does refuses,
  with each plan's reason, and the batch runs on the others (if every actor refuses, the batch
  stops before any slide with those reasons: :class:`~tseg.runtime.errors.ClusterError`).
* **Faults.** An actor that dies while processing a slide (killed, its node lost, out of memory)
  is replaced, and the slide goes back to the head of the queue for the next free worker; a
  slide during which ``max_worker_deaths`` (2) workers died fails with that reason and the batch
  goes on. A dead worker's temporary folder and lock are removed; its outputs never looked
  finished (they were never renamed into place).
* **Ctrl-C.** The running slides are asked to stop (each worker removes its partial outputs and
  releases its lock) for up to :data:`CANCEL_GRACE_S`, then the actors are killed, and
  :class:`~tseg.runtime.cohort.outcomes.BatchInterrupted` says what finished and what was left.
* **Progress and logs.** The driver polls each busy actor for its tile count about once a
  second, for live progress (``ledger.events.tiles_done``); each actor returns its slide's tile
  count with the outcome, and the driver counts the tiles its polls had not reported then, so the
  cohort's count is exact however late (or never) the polls are answered. Each actor returns the
  log records of its work with the outcome, and the driver logs them (each distinct message
  once), as local workers' records are forwarded.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tseg.runtime.cohort.outcomes import Ledger, SlideOutcome
from tseg.runtime.cohort.ray_cluster import ray_session
from tseg.runtime.cohort.ray_worker import CONTROL, uses_gpus, worker_class
from tseg.runtime.cohort.identity import slide_stem
from tseg.runtime.cohort.runner import remove_abandoned
from tseg.runtime.errors import ClusterError, InvalidArgumentError

log = logging.getLogger(__name__)

#: Cluster CPUs per CPU worker when ``workers`` is not given.
CPUS_PER_CPU_WORKER = 4
#: How long the running slides get to stop after Ctrl-C before their workers are killed.
CANCEL_GRACE_S = 60.0
#: How long to wait for a first worker before giving up (the cluster has no room for one).
START_TIMEOUT_S = 600.0
PROGRESS_POLL_S = 1.0

@dataclass(eq=False)
class _Worker:
    handle: Any
    number: int
    label: str = ""
    tiles_seen: int = 0


@dataclass
class _Job:
    worker: _Worker
    slide: Path
    wait: bool
    tiles_before: int = 0  # the worker's tiles already counted when the slide was given to it


@dataclass
class _Deaths:
    reasons: list[str] = field(default_factory=list)


def _death_reason(exc: BaseException) -> str:
    """A worker's death in one line: Ray's first line and the worker's exit detail."""
    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    detail = re.search(r"Worker exit type: (\w+)", text)
    cause = re.search(r"Worker exit detail: ([^.]*\.)", text)
    extra = ", ".join(x for x in ((detail.group(1) if detail else ""), (cause.group(1).strip() if cause else "")) if x)
    if "memory" in text.lower() and "out of memory" not in extra.lower() and "oom" in text.lower():
        extra = (extra + ", " if extra else "") + "possibly out of memory"
    return f"{first}" + (f" ({extra})" if extra else "")


def run_on_ray(slides: Sequence[Path], out: Path, ledger: Ledger, *, address: str | None, engine: str | None,
               providers: Any, settings: Mapping[str, Any], per_slide: Mapping[str, Mapping[str, Any]],
               overwrite: bool, workers: int | None, wait_for_locks: bool, max_worker_deaths: int = 2,
               quiet_load: bool = False) -> None:
    """Process ``slides`` on Ray workers; outcomes go to ``ledger`` (:class:`tseg.runtime.cohort.outcomes.Ledger`),
    progress to ``ledger.events``."""
    if workers is not None and workers < 1:
        raise InvalidArgumentError(f"workers must be at least 1, got {workers}")
    if max_worker_deaths < 1:
        raise InvalidArgumentError(f"max_worker_deaths must be at least 1, got {max_worker_deaths}")
    if not slides:  # nothing to do: no cluster to start
        return
    engine = str(Path(engine).absolute()) if engine is not None else None  # workers' folders differ
    with ray_session(address) as ray:
        from ray.exceptions import RayError, RayTaskError

        resources = ray.cluster_resources()
        gpu = uses_gpus(engine, providers, float(resources.get("GPU", 0)))
        if gpu and resources.get("GPU", 0) < 1:
            raise ClusterError("the Ray cluster has no GPU, and this model needs one per worker (a TensorRT plan or "
                               "CUDA providers); add GPU nodes, or run an .onnx model with --providers cpu")
        count = workers or (int(resources.get("GPU", 0)) if gpu
                            else max(1, int(resources.get("CPU", 1)) // CPUS_PER_CPU_WORKER))
        options: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1 if gpu else 0}
        if not gpu:
            options["scheduling_strategy"] = "SPREAD"
        log.info("Ray: %d %s worker(s) on a cluster of %s CPUs and %s GPUs", count, "GPU" if gpu else "CPU",
                 int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))
        scheduler = RayScheduler(
            ray, worker_class(ray), ledger, slides, out, errors=(RayError, RayTaskError), actor_options=options,
            actor_args=(engine, providers, dict(settings), logging.getLogger().getEffectiveLevel()),
            quiet_load=quiet_load, per_slide=per_slide, overwrite=overwrite, wait_for_locks=wait_for_locks,
            max_worker_deaths=max_worker_deaths,
            no_room=f"the cluster has no free {'GPU' if gpu else 'CPU'} for one (resources: {resources})")
        scheduler.run(count)


class RayScheduler:
    """One batch on Ray actors: the slides' queue and the workers (starting, idle, busy), with
    one method per event (a worker ready or refusing, a slide's result, a worker's death, a
    progress answer, Ctrl-C). ``ray`` is the module (or a stand-in with ``wait``, ``get`` and
    ``kill``); ``errors`` is ``(RayError, RayTaskError)`` of ``ray.exceptions``."""

    def __init__(self, ray: Any, actor_class: Any, ledger: Ledger, slides: Sequence[Path], out: Path, *,
                 errors: tuple[type[BaseException], type[BaseException]], actor_options: Mapping[str, Any],
                 actor_args: tuple[Any, ...], quiet_load: bool, per_slide: Mapping[str, Mapping[str, Any]],
                 overwrite: bool, wait_for_locks: bool, max_worker_deaths: int, no_room: str = "") -> None:
        self.ray, self.actor_class, self.ledger, self.slides, self.out = ray, actor_class, ledger, slides, out
        self.ray_error, self.task_error = errors
        self.actor_options, self.actor_args, self.quiet_load = dict(actor_options), actor_args, quiet_load
        self.per_slide, self.overwrite, self.wait_for_locks = per_slide, overwrite, wait_for_locks
        self.max_worker_deaths, self.no_room = max_worker_deaths, no_room
        self.given = {str(Path(s).absolute()): str(s) for s in slides}
        self.out_abs = str(Path(out).absolute())
        self.numbers = iter(range(1_000_000))
        self.starting: dict[Any, _Worker] = {}
        self.idle: deque[_Worker] = deque()
        self.busy: dict[Any, _Job] = {}
        self.alive: list[_Worker] = []
        self.refusals: dict[str, list[str]] = {}
        self.deaths: dict[str, _Deaths] = {}
        self.progress_refs: dict[Any, _Worker] = {}
        self.queue: deque[tuple[Path, bool]] = deque((Path(s), False) for s in slides)
        self.deferred: list[Path] = []
        self.seen_logs: set[tuple[int, str]] = set()
        self.ever_ready = False
        self.second_pass = False
        self.started_at = time.monotonic()
        self.last_poll = 0.0

    # --- the loop ------------------------------------------------------------------------------

    def run(self, count: int) -> None:
        """Start ``count`` workers and process every slide; raises BatchInterrupted on Ctrl-C."""
        for _ in range(count):
            self.start_worker()
        try:
            while self.step():
                pass
            if self.refusals and self.ever_ready:
                for reason, who in self.refusals.items():
                    log.warning("%d Ray worker(s) refused (%s): %s", len(who), ", ".join(who), reason)
        except KeyboardInterrupt as stop:
            self.interrupted(stop)
        finally:
            for w in list(self.alive) + list(self.starting.values()):
                self.kill(w)

    def step(self) -> bool:
        """Dispatch, wait for one event (up to :data:`PROGRESS_POLL_S`) and handle it; False when done."""
        self.dispatch()
        if not self.busy and not self.queue:
            return self.next_pass()
        if not self.busy and not self.idle and not self.starting:
            self.no_workers_left()
            return False
        if not self.ever_ready and time.monotonic() - self.started_at > START_TIMEOUT_S:
            raise ClusterError(f"no Ray worker started within {START_TIMEOUT_S:.0f} s: {self.no_room}")
        done, _ = self.ray.wait(list(self.busy) + list(self.starting), num_returns=1, timeout=PROGRESS_POLL_S)
        for ref in done:
            if ref in self.starting:
                self.worker_started(ref)
            else:
                self.slide_returned(ref)
        self.poll_progress()
        return True

    def next_pass(self) -> bool:
        """The queue is empty: go back to the slides whose lock another process held (once)."""
        if self.deferred and self.wait_for_locks and not self.second_pass:
            self.second_pass = True
            for slide in self.deferred:
                log.info("%s: waiting for the process that holds its lock", slide)
            self.queue.extend((s, True) for s in self.deferred)
            self.deferred = []
            return True
        return False

    def dispatch(self) -> None:
        """Give the next slides to idle workers."""
        while self.idle and self.queue:
            w = self.idle.popleft()
            slide, wait_now = self.queue.popleft()
            absolute = str(Path(slide).absolute())
            ref = w.handle.process.remote(absolute, self.out_abs, self.overwrite, wait_now,
                                          self.per_slide.get(str(slide)))
            self.busy[ref] = _Job(w, slide, wait_now, w.tiles_seen)
            self.ledger.events.slide_started(slide, slide_stem(Path(slide)))

    # --- workers -------------------------------------------------------------------------------

    def start_worker(self) -> None:
        n = next(self.numbers)
        handle = self.actor_class.options(**self.actor_options).remote(*self.actor_args, n, self.quiet_load)
        self.starting[handle.ready.remote()] = _Worker(handle, n)

    def kill(self, w: _Worker) -> None:
        try:
            self.ray.kill(w.handle, no_restart=True)
        except Exception:  # already dead
            pass
        if w in self.alive:
            self.alive.remove(w)

    def worker_started(self, ref: Any) -> None:
        """A worker's constructor returned: it is ready, or it refused (no plan for its GPU...)."""
        w = self.starting.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray_error as exc:
            info = {"label": f"worker #{w.number}", "error": _death_reason(exc), "logs": []}
        self.relay(info.get("logs", []))
        w.label = info.get("label", "")
        if info.get("error"):
            self.refusals.setdefault(str(info["error"]), []).append(w.label)
            log.warning("Ray worker %s refused: %s", w.label, info["error"])
            self.kill(w)
            return
        self.ever_ready = True
        self.alive.append(w)
        self.idle.append(w)
        log.debug("Ray worker %s ready: %s", w.label, (info.get("backend") or {}).get("path"))

    def worker_died(self, job: _Job, exc: BaseException) -> None:
        """Retry the slide on another worker, or fail it after ``max_worker_deaths``; replace the worker."""
        w, slide = job.worker, job.slide
        reason = _death_reason(exc)
        self.kill(w)
        history = self.deaths.setdefault(str(slide), _Deaths())
        history.reasons.append(reason)
        _remove_left(self.out, slide)
        if len(history.reasons) >= self.max_worker_deaths:
            text = (f"{slide}: {len(history.reasons)} workers died while processing it (a crash, a lost node or "
                    f"out of memory); last: {reason}")
            log.error(text)
            self.finish(SlideOutcome(str(Path(slide).absolute()), slide_stem(Path(slide)), "failed", text,
                                     error_cli=text, worker=w.label), slide)
        else:
            log.warning("%s: its worker (%s) died while processing it (%s); retrying on another worker", slide,
                        w.label or f"#{w.number}", reason)
            self.queue.appendleft((slide, job.wait))
        self.start_worker()  # replace the dead worker

    def no_workers_left(self) -> None:
        """Every worker refused or died: stop (none ever started) or fail the slides left."""
        reasons = "; ".join(sorted(self.refusals)) or "every worker died"
        if not self.ever_ready:
            raise ClusterError(f"no Ray worker could load the model: {reasons}")
        for slide, _wait in list(self.queue):
            text = f"{slide}: no Ray worker left to process it ({reasons})"
            self.finish(SlideOutcome(str(Path(slide).absolute()), slide_stem(Path(slide)), "failed", text,
                                     error_cli=text), slide)
        self.queue.clear()

    # --- slides ----------------------------------------------------------------------------------

    def slide_returned(self, ref: Any) -> None:
        """A worker returned a slide's outcome, or raised, or died."""
        job = self.busy.pop(ref)
        try:
            outcome, records, tiles = self.ray.get(ref)
        except self.task_error as exc:  # an error that escaped run_slide: this slide fails
            text = f"{job.slide}: unexpected error in the worker: {str(exc).splitlines()[0]}"
            self.finish(SlideOutcome(str(Path(job.slide).absolute()), slide_stem(Path(job.slide)), "failed",
                                     text, error_cli=text, worker=job.worker.label), job.slide)
            self.idle.append(job.worker)
            return
        except self.ray_error as exc:  # the worker died (killed, node lost, out of memory)
            self.worker_died(job, exc)
            return
        self.relay(records)
        self.count_tiles(job, tiles)
        self.idle.append(job.worker)
        if outcome.status == "locked" and not job.wait and self.wait_for_locks:
            outcome.slide = str(job.slide)
            self.ledger.defer(job.slide, outcome)
            self.deferred.append(job.slide)
            return
        self.finish(outcome, job.slide)

    def finish(self, outcome: Any, slide: Path) -> None:
        """Record ``outcome`` under the slide's name as given (not the workers' absolute path)."""
        outcome.slide = self.given.get(outcome.slide, str(slide))
        absolute = str(Path(slide).absolute())
        for attr in ("error", "error_cli", "detail"):
            value = getattr(outcome, attr)
            if value and absolute != str(slide):
                setattr(outcome, attr, value.replace(absolute, str(slide)))
        history = self.deaths.get(str(slide))
        if history and outcome.ok:
            note = f"finished after {len(history.reasons)} worker(s) died processing it ({history.reasons[-1]})"
            outcome.detail = f"{outcome.detail}; {note}" if outcome.detail else note
        self.ledger.finish(outcome)

    def relay(self, records: Sequence[tuple[str, int, str]]) -> None:
        """Log a worker's records here, each distinct message once."""
        for name, level, text in records:
            if (level, text) in self.seen_logs:
                continue
            self.seen_logs.add((level, text))
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                logger.log(level, "%s", text)

    # --- progress and Ctrl-C ----------------------------------------------------------------------

    def ask_progress(self, workers: Sequence[_Worker]) -> None:
        asked = set(self.progress_refs.values())
        for w in workers:
            if w not in asked:
                self.progress_refs[w.handle.progress.options(concurrency_group=CONTROL).remote()] = w

    def poll_progress(self) -> None:
        """Count the tiles the answered progress calls report; ask busy workers again each second."""
        if self.progress_refs:
            ready, _ = self.ray.wait(list(self.progress_refs), num_returns=len(self.progress_refs), timeout=0)
            for ref in ready:
                w = self.progress_refs.pop(ref)
                try:
                    tiles = int(self.ray.get(ref)["tiles"])
                except self.ray_error:
                    continue
                if tiles > w.tiles_seen:
                    self.ledger.events.tiles_done(tiles - w.tiles_seen)
                w.tiles_seen = max(w.tiles_seen, tiles)
        now = time.monotonic()
        if now - self.last_poll >= PROGRESS_POLL_S:
            self.last_poll = now
            self.ask_progress([job.worker for job in self.busy.values()])

    def count_tiles(self, job: _Job, tiles: int) -> None:
        """A slide finished with ``tiles`` tiles (the worker's answer): count those its worker's
        progress answers had not reported, so the total is exact without waiting for them. A
        progress answer that arrives later reports nothing new (the worker's count is kept)."""
        w = job.worker
        reported = w.tiles_seen - job.tiles_before
        if tiles > reported:
            self.ledger.events.tiles_done(tiles - reported)
        w.tiles_seen = max(w.tiles_seen, job.tiles_before + tiles)

    def interrupted(self, stop: KeyboardInterrupt) -> None:
        """Ctrl-C: stop the running slides, kill the workers, raise BatchInterrupted."""
        running = [str(j.slide) for j in self.busy.values()]
        _stop(self.ray, self.busy, self.ray_error, self.finish, self.out)
        for w in list(self.alive) + list(self.starting.values()):
            self.kill(w)
        finished = self.ledger.finished()
        running = [s for s in running if s not in finished]
        for job in self.busy.values():  # killed before they stopped: what they left is removed
            _remove_left(self.out, job.slide)
        raise self.ledger.interrupted(self.slides, running, stop) from None


def _remove_left(out: Path, slide: Path, tries: int = 20) -> None:
    """Remove a killed worker's temporary folder once its lock is free (the kill is asynchronous)."""
    for _ in range(tries):
        try:
            if remove_abandoned(out, slide) == 0:
                return
        except OSError:
            return
        time.sleep(0.1)


def _stop(ray: Any, busy: dict[Any, _Job], ray_error: type, finish: Callable[[Any, Path], None], out: Path) -> None:
    """Ask the running slides to stop and wait for them (up to :data:`CANCEL_GRACE_S`; a second
    Ctrl-C stops waiting). Slides that finished anyway are recorded."""
    for job in busy.values():
        try:
            job.worker.handle.cancel.options(concurrency_group=CONTROL).remote()
        except Exception:
            pass
    deadline = time.monotonic() + CANCEL_GRACE_S
    try:
        while busy and time.monotonic() < deadline:
            done, _ = ray.wait(list(busy), num_returns=1, timeout=max(0.1, deadline - time.monotonic()))
            for ref in done:
                job = busy.pop(ref)
                try:
                    outcome, _records, _tiles = ray.get(ref)
                except ray_error:  # died while stopping: remove what it left
                    _remove_left(out, job.slide)
                    continue
                if outcome.status in ("done", "skipped", "postprocessed"):
                    finish(outcome, job.slide)
    except KeyboardInterrupt:
        log.warning("second interrupt: stopping the workers now")
