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
  second (``on_tiles``); each actor returns the log records of its work with the outcome, and
  the driver logs them (each distinct message once), as local workers' records are forwarded.
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
               overwrite: bool, workers: int | None, wait_for_locks: bool,
               on_slide_start: Callable[[Path, str], None] | None = None,
               on_tiles: Callable[[int], None] | None = None, max_worker_deaths: int = 2,
               quiet_load: bool = False) -> None:
    """Process ``slides`` on Ray workers; outcomes go to ``ledger`` (:class:`tseg.runtime.cohort.outcomes.Ledger`)."""
    if workers is not None and workers < 1:
        raise InvalidArgumentError(f"workers must be at least 1, got {workers}")
    if max_worker_deaths < 1:
        raise InvalidArgumentError(f"max_worker_deaths must be at least 1, got {max_worker_deaths}")
    if not slides:  # nothing to do: no cluster to start
        return
    given = {str(Path(s).absolute()): str(s) for s in slides}
    out_abs = str(Path(out).absolute())
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
        actor_class = worker_class(ray)
        log_level = logging.getLogger().getEffectiveLevel()
        log.info("Ray: %d %s worker(s) on a cluster of %s CPUs and %s GPUs", count, "GPU" if gpu else "CPU",
                 int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))

        seen_logs: set[tuple[int, str]] = set()

        def relay(records: Sequence[tuple[str, int, str]]) -> None:
            for name, level, text in records:
                if (level, text) in seen_logs:
                    continue
                seen_logs.add((level, text))
                logger = logging.getLogger(name)
                if logger.isEnabledFor(level):
                    logger.log(level, "%s", text)

        numbers = iter(range(1_000_000))
        starting: dict[Any, _Worker] = {}
        idle: deque[_Worker] = deque()
        busy: dict[Any, _Job] = {}
        alive: list[_Worker] = []
        refusals: dict[str, list[str]] = {}
        deaths: dict[str, _Deaths] = {}
        progress_refs: dict[Any, _Worker] = {}
        queue: deque[tuple[Path, bool]] = deque((Path(s), False) for s in slides)
        deferred: list[Path] = []
        ever_ready = False
        started_at = time.monotonic()
        last_poll = 0.0

        def start_worker() -> None:
            n = next(numbers)
            handle = actor_class.options(**options).remote(engine, providers, dict(settings), log_level, n, quiet_load)
            w = _Worker(handle, n)
            starting[handle.ready.remote()] = w

        def kill(w: _Worker) -> None:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception:  # already dead
                pass
            if w in alive:
                alive.remove(w)

        def poll_progress(force: bool = False) -> None:
            nonlocal last_poll
            if progress_refs:
                ready, _ = ray.wait(list(progress_refs), num_returns=len(progress_refs), timeout=0)
                for ref in ready:
                    w = progress_refs.pop(ref)
                    try:
                        tiles = int(ray.get(ref)["tiles"])
                    except RayError:
                        continue
                    if tiles > w.tiles_seen and on_tiles:
                        on_tiles(tiles - w.tiles_seen)
                    w.tiles_seen = max(w.tiles_seen, tiles)
            now = time.monotonic()
            if force or now - last_poll >= PROGRESS_POLL_S:
                last_poll = now
                asked = set(progress_refs.values())
                for job in busy.values():
                    if job.worker not in asked:
                        progress_refs[job.worker.handle.progress.options(concurrency_group=CONTROL).remote()] = job.worker

        def finish(outcome: Any, slide: Path) -> None:
            outcome.slide = given.get(outcome.slide, str(slide))
            absolute = str(Path(slide).absolute())
            for attr in ("error", "error_cli", "detail"):
                value = getattr(outcome, attr)
                if value and absolute != str(slide):
                    setattr(outcome, attr, value.replace(absolute, str(slide)))
            history = deaths.get(str(slide))
            if history and outcome.ok:
                note = f"finished after {len(history.reasons)} worker(s) died processing it ({history.reasons[-1]})"
                outcome.detail = f"{outcome.detail}; {note}" if outcome.detail else note
            ledger.finish(outcome)

        def dispatch() -> None:
            while idle and queue:
                w = idle.popleft()
                slide, wait_now = queue.popleft()
                absolute = str(Path(slide).absolute())
                ref = w.handle.process.remote(absolute, out_abs, overwrite, wait_now, per_slide.get(str(slide)))
                busy[ref] = _Job(w, slide, wait_now)
                if on_slide_start:
                    on_slide_start(slide, slide_stem(Path(slide)))

        def worker_died(job: _Job, exc: BaseException) -> None:
            w, slide = job.worker, job.slide
            reason = _death_reason(exc)
            kill(w)
            history = deaths.setdefault(str(slide), _Deaths())
            history.reasons.append(reason)
            _remove_left(out, slide)
            if len(history.reasons) >= max_worker_deaths:
                text = (f"{slide}: {len(history.reasons)} workers died while processing it (a crash, a lost node or "
                        f"out of memory); last: {reason}")
                log.error(text)
                finish(SlideOutcome(str(Path(slide).absolute()), slide_stem(Path(slide)), "failed", text,
                                    error_cli=text, worker=w.label), slide)
            else:
                log.warning("%s: its worker (%s) died while processing it (%s); retrying on another worker", slide,
                            w.label or f"#{w.number}", reason)
                queue.appendleft((slide, job.wait))
            start_worker()  # replace the dead worker

        def in_progress() -> list[str]:
            return [str(j.slide) for j in busy.values()]

        for _ in range(count):
            start_worker()
        try:
            second_pass = False
            while True:
                dispatch()
                if not busy and not queue:
                    if deferred and wait_for_locks and not second_pass:
                        second_pass = True
                        for slide in deferred:
                            log.info("%s: waiting for the process that holds its lock", slide)
                        queue.extend((s, True) for s in deferred)
                        deferred = []
                        continue
                    break
                if not busy and not idle and not starting:
                    reasons = "; ".join(sorted(refusals)) or "every worker died"
                    if not ever_ready:
                        raise ClusterError(f"no Ray worker could load the model: {reasons}")
                    for slide, _wait in list(queue):
                        text = f"{slide}: no Ray worker left to process it ({reasons})"
                        finish(SlideOutcome(str(Path(slide).absolute()), slide_stem(Path(slide)), "failed", text,
                                            error_cli=text), slide)
                    queue.clear()
                    break
                if not ever_ready and time.monotonic() - started_at > START_TIMEOUT_S:
                    raise ClusterError(f"no Ray worker started within {START_TIMEOUT_S:.0f} s: the cluster has no free "
                                       f"{'GPU' if gpu else 'CPU'} for one (resources: {resources})")
                waiting = list(busy) + list(starting)
                done, _ = ray.wait(waiting, num_returns=1, timeout=PROGRESS_POLL_S)
                for ref in done:
                    if ref in starting:
                        w = starting.pop(ref)
                        try:
                            info = ray.get(ref)
                        except RayError as exc:
                            info = {"label": f"worker #{w.number}", "error": _death_reason(exc), "logs": []}
                        relay(info.get("logs", []))
                        w.label = info.get("label", "")
                        if info.get("error"):
                            refusals.setdefault(str(info["error"]), []).append(w.label)
                            log.warning("Ray worker %s refused: %s", w.label, info["error"])
                            kill(w)
                            continue
                        ever_ready = True
                        alive.append(w)
                        idle.append(w)
                        log.debug("Ray worker %s ready: %s", w.label, (info.get("backend") or {}).get("path"))
                        continue
                    job = busy.pop(ref)
                    try:
                        outcome, records = ray.get(ref)
                    except RayTaskError as exc:  # an error that escaped run_slide: this slide fails
                        text = f"{job.slide}: unexpected error in the worker: {str(exc).splitlines()[0]}"
                        finish(SlideOutcome(str(Path(job.slide).absolute()), slide_stem(Path(job.slide)), "failed",
                                            text, error_cli=text, worker=job.worker.label), job.slide)
                        idle.append(job.worker)
                        continue
                    except RayError as exc:  # the worker died (killed, node lost, out of memory)
                        worker_died(job, exc)
                        continue
                    relay(records)
                    idle.append(job.worker)
                    if outcome.status == "locked" and not job.wait and wait_for_locks:
                        outcome.slide = str(job.slide)
                        ledger.defer(job.slide, outcome)
                        deferred.append(job.slide)
                        continue
                    finish(outcome, job.slide)
                poll_progress()
            asked = set(progress_refs.values())  # the last tiles of the last slides
            for w in alive:
                if w not in asked:
                    progress_refs[w.handle.progress.options(concurrency_group=CONTROL).remote()] = w
            if progress_refs:
                ray.wait(list(progress_refs), num_returns=len(progress_refs), timeout=2.0)
                poll_progress()
            if refusals and ever_ready:
                for reason, who in refusals.items():
                    log.warning("%d Ray worker(s) refused (%s): %s", len(who), ", ".join(who), reason)
        except KeyboardInterrupt as stop:
            running = in_progress()
            _stop(ray, busy, RayError, finish, out)
            for w in list(alive) + list(starting.values()):
                kill(w)
            finished = ledger.finished()
            running = [s for s in running if s not in finished]
            for job in busy.values():  # killed before they stopped: what they left is removed
                _remove_left(out, job.slide)
            raise ledger.interrupted(slides, running, stop) from None
        finally:
            for w in list(alive) + list(starting.values()):
                kill(w)


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
                    outcome, _records = ray.get(ref)
                except ray_error:  # died while stopping: remove what it left
                    _remove_left(out, job.slide)
                    continue
                if outcome.status in ("done", "skipped", "postprocessed"):
                    finish(outcome, job.slide)
    except KeyboardInterrupt:
        log.warning("second interrupt: stopping the workers now")
