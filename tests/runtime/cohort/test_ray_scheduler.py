"""The Ray scheduler's events on a fake Ray (no cluster, no model): a worker that refuses, a
worker that dies mid-slide (the slide is retried on another one, the worker replaced), an error
that escapes a worker, progress counted from the workers' tile counts, and the outcomes in the
ledger as a local run has them. The real cluster is exercised by test_ray.py."""

from __future__ import annotations

import logging
from pathlib import Path

from tseg.runtime.cohort.outcomes import BatchEvents, Ledger, SlideOutcome
from tseg.runtime.cohort.ray_batch import RayScheduler


class FakeRayError(Exception):
    pass


class FakeTaskError(FakeRayError):
    pass


class Ref:
    def __init__(self, value=None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


class Method:
    def __init__(self, fn) -> None:
        self.fn = fn

    def options(self, **_):
        return self

    def remote(self, *args):
        try:
            return Ref(self.fn(*args))
        except FakeRayError as exc:
            return Ref(error=exc)


class FakeWorker:
    """An actor handle: ``ready``, ``process`` and ``progress`` answer at once."""

    def __init__(self, cluster: "FakeRay", number: int) -> None:
        self.number, self.tiles = number, 0
        self.ready = Method(lambda: {"label": f"w{number}", "logs": [],
                                     "error": "no plan for this GPU" if number == 0 else None})
        self.process = Method(lambda slide, out, overwrite, wait, overrides: cluster.process(self, slide))
        self.progress = Method(lambda: {"tiles": self.tiles})


class FakeActorClass:
    def __init__(self, cluster: "FakeRay") -> None:
        self.cluster = cluster

    def options(self, **_):
        return self

    def remote(self, engine, providers, settings, log_level, number, quiet):
        return FakeWorker(self.cluster, number)


class FakeRay:
    def __init__(self) -> None:
        self.killed: list[int] = []
        self.calls: list[tuple[int, str]] = []

    def process(self, worker: FakeWorker, slide: str):
        name = Path(slide).stem
        self.calls.append((worker.number, name))
        if name == "b" and sum(n == "b" for _, n in self.calls) == 1:
            raise FakeRayError("The actor died unexpectedly.\nWorker exit type: SYSTEM_ERROR")
        if name == "c":
            raise FakeTaskError("ValueError: a bug\n  traceback...")
        worker.tiles += 4
        return SlideOutcome(slide, name, "done", worker=f"w{worker.number}"), [("tseg.test", logging.INFO, "worker says hello")]

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs)[:num_returns], list(refs)[num_returns:]

    def get(self, ref: Ref):
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


def test_refusal_death_retry_and_escaped_error_on_a_fake_ray(tmp_path, caplog):
    cluster, events = FakeRay(), Recorder()
    slides = [tmp_path / "in" / f"{n}.tiff" for n in "abcd"]
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger(slides, out, events)
    scheduler = RayScheduler(cluster, FakeActorClass(cluster), ledger, slides, out,
                             errors=(FakeRayError, FakeTaskError), actor_options={}, actor_args=(None, "cpu", {}, 20),
                             quiet_load=True, per_slide={}, overwrite=False, wait_for_locks=True,
                             max_worker_deaths=2)
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
    # Tiles are counted from the workers' progress answers: w2's two slides; w1 died before its
    # count for a was polled (progress is polled about once a second).
    assert events.tiles == 8
    assert caplog.text.count("worker says hello") == 1  # a worker's log record, relayed once


def test_no_worker_loads_the_model(tmp_path):
    import pytest

    from tseg.runtime.errors import ClusterError

    cluster = FakeRay()
    slides = [tmp_path / "a.tiff"]
    scheduler = RayScheduler(cluster, FakeActorClass(cluster), Ledger(slides, tmp_path), slides, tmp_path,
                             errors=(FakeRayError, FakeTaskError), actor_options={}, actor_args=(None, "cpu", {}, 20),
                             quiet_load=True, per_slide={}, overwrite=False, wait_for_locks=True,
                             max_worker_deaths=2)
    with pytest.raises(ClusterError, match="no Ray worker could load the model: no plan for this GPU"):
        scheduler.run(1)  # worker 0 refuses
