"""The Ray scheduler's events on a fake Ray (no cluster, no model): a worker that refuses, a
worker that dies mid-slide (the slide is retried on another one, the worker replaced), an error
that escapes a worker, the cohort's tile count (exact whether the workers' progress answers
arrive or not), and the outcomes in the ledger as a local run has them. The real cluster is exercised by test_ray.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tseg.runtime.cohort.outcomes import BatchEvents, Ledger, SlideOutcome
from tseg.runtime.cohort.ray_batch import RayScheduler


class FakeRayError(Exception):
    pass


class FakeTaskError(FakeRayError):
    pass


class Ref:
    def __init__(self, value=None, error: BaseException | None = None, progress: bool = False,
                 rounds: int = 0) -> None:
        self.value, self.error, self.progress, self.rounds = value, error, progress, rounds


class Method:
    """A remote method; its answer is ready after ``rounds`` calls of ``wait`` that include it."""

    def __init__(self, fn, progress: bool = False, rounds: int = 0) -> None:
        self.fn, self.is_progress, self.rounds = fn, progress, rounds

    def options(self, **_):
        return self

    def remote(self, *args):
        try:
            return Ref(self.fn(*args), progress=self.is_progress, rounds=self.rounds)
        except FakeRayError as exc:
            return Ref(error=exc, progress=self.is_progress, rounds=self.rounds)


class FakeWorker:
    """An actor handle: ``ready`` and ``progress`` answer at once, ``process`` after one round of
    ``wait`` (it runs when called; its answer is handed over when ``wait`` returns it, so the
    driver asks busy workers for progress). ``progress`` answers as
    the cluster's ``progress`` mode says: ``full`` (the tiles of the slide just processed),
    ``partial`` (half of them: an answer from the middle of the slide), ``never`` (``wait``
    never returns it: a reply that did not come in time)."""

    def __init__(self, cluster: "FakeRay", number: int) -> None:
        self.number, self.tiles = number, 0
        self.ready = Method(lambda: {"label": f"w{number}", "logs": [],
                                     "error": "no plan for this GPU" if number == 0 else None})
        self.process = Method(lambda slide, out, overwrite, wait, overrides: cluster.process(self, slide), rounds=1)
        self.progress = Method(lambda: {"tiles": self.tiles - (2 if cluster.progress == "partial" else 0)},
                               progress=True)


class FakeActorClass:
    def __init__(self, cluster: "FakeRay") -> None:
        self.cluster = cluster

    def options(self, **_):
        return self

    def remote(self, engine, providers, settings, log_level, number, quiet):
        return FakeWorker(self.cluster, number)


class FakeRay:
    def __init__(self, progress: str = "full") -> None:
        self.killed: list[int] = []
        self.calls: list[tuple[int, str]] = []
        self.progress = progress
        self.progress_answers = 0

    def process(self, worker: FakeWorker, slide: str):
        name = Path(slide).stem
        self.calls.append((worker.number, name))
        if name == "b" and sum(n == "b" for _, n in self.calls) == 1:
            raise FakeRayError("The actor died unexpectedly.\nWorker exit type: SYSTEM_ERROR")
        if name == "c":
            raise FakeTaskError("ValueError: a bug\n  traceback...")
        worker.tiles += 4
        return (SlideOutcome(slide, name, "done", worker=f"w{worker.number}"),
                [("tseg.test", logging.INFO, "worker says hello")], 4)

    def wait(self, refs, num_returns=1, timeout=None):
        refs = list(refs)
        for r in refs:
            r.rounds -= 1
        ready = [r for r in refs if r.rounds < 0 and not (r.progress and self.progress == "never")][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: Ref):
        assert not (ref.progress and self.progress == "never")
        self.progress_answers += ref.progress
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, handle: FakeWorker, no_restart: bool = True) -> None:
        self.killed.append(handle.number)


class Recorder(BatchEvents):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.done: list[str] = []
        self.tiles = 0

    def slide_started(self, slide, name):
        self.started.append(name)

    def slide_done(self, outcome):
        self.done.append(f"{outcome.name}:{outcome.status}")

    def tiles_done(self, count):
        self.tiles += count


def fake_scheduler(cluster, ledger, slides, out):
    """A RayScheduler on the fake cluster, as run_on_ray makes one (CPU workers, 2 deaths a slide)."""
    return RayScheduler(cluster, FakeActorClass(cluster), ledger, slides, out,
                        errors=(FakeRayError, FakeTaskError), actor_options={}, actor_args=(None, "cpu", {}, 20),
                        quiet_load=True, per_slide={}, overwrite=False, wait_for_locks=True, max_worker_deaths=2)


def test_refusal_death_retry_and_escaped_error_on_a_fake_ray(tmp_path, caplog):
    cluster, events = FakeRay(), Recorder()
    slides = [tmp_path / "in" / f"{n}.tiff" for n in "abcd"]
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger(slides, out, events)
    scheduler = fake_scheduler(cluster, ledger, slides, out)
    with caplog.at_level(logging.INFO):
        scheduler.run(3)
    outcomes = {o.name: o for o in ledger.sorted()}
    assert [o.name for o in ledger.sorted()] == ["a", "b", "c", "d"]
    assert [outcomes[n].status for n in "abcd"] == ["done", "done", "failed", "done"]
    # b's first worker died: b went back to the queue, finished on another worker, with a note.
    assert [w for w, n in cluster.calls if n == "b"][0] != [w for w, n in cluster.calls if n == "b"][1]
    assert "finished after 1 worker(s) died" in outcomes["b"].detail and "SYSTEM_ERROR" in outcomes["b"].detail
    assert "unexpected error in the worker: ValueError: a bug" in outcomes["c"].error
    assert outcomes["a"].slide == str(slides[0])  # the slide as given
    # Worker 0 refused and was killed; the dead one was replaced (worker 3); all killed at the end.
    assert "Ray worker w0 refused: no plan for this GPU" in caplog.text
    assert set(cluster.killed) == {0, 1, 2, 3}
    assert sorted(events.started) == ["a", "b", "b", "c", "d"]
    assert sorted(events.done) == ["a:done", "b:done", "c:failed", "d:done"]
    # Every tile of every finished slide (a, b, d: 4 each) counted once, from the workers'
    # progress answers and the counts returned with the outcomes.
    assert events.tiles == 12
    assert caplog.text.count("worker says hello") == 1  # a worker's log record, relayed once


def test_no_worker_loads_the_model(tmp_path):
    import pytest

    from tseg.runtime.errors import ClusterError

    cluster = FakeRay()
    slides = [tmp_path / "a.tiff"]
    scheduler = fake_scheduler(cluster, Ledger(slides, tmp_path), slides, tmp_path)
    with pytest.raises(ClusterError, match="no Ray worker could load the model: no plan for this GPU"):
        scheduler.run(1)  # worker 0 refuses


@pytest.mark.parametrize("progress", ["full", "partial", "never"])
def test_the_tile_count_is_exact_whatever_progress_answers_arrive(tmp_path, monkeypatch, progress):
    """The slides' tiles are counted once each: from the progress answers while a slide runs, and
    the rest from the count its worker returns with the outcome, even when no progress answer
    ever arrives (a driver under load, a slow node) or an answer arrives after the outcome."""
    from tseg.runtime.cohort import ray_batch

    monkeypatch.setattr(ray_batch, "PROGRESS_POLL_S", 0.0)  # ask the busy workers at every step
    cluster, events = FakeRay(progress), Recorder()
    slides = [tmp_path / "in" / f"{n}.tiff" for n in "abcdefgh"]
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger(slides, out, events)
    scheduler = fake_scheduler(cluster, ledger, slides, out)
    scheduler.run(3)
    done = [o.name for o in ledger.sorted() if o.status == "done"]
    assert done == list("abdefgh")  # c failed (an error in the worker); b finished on its retry
    assert events.tiles == 4 * len(done)
    if progress == "never":
        assert cluster.progress_answers == 0
    else:  # the progress answers were read (and counted nothing twice)
        assert cluster.progress_answers > 0
