"""The job store on its own: schema versions, submissions (idempotency keys, equal active jobs),
claiming, restarts, cancels, forgetting; concurrent submissions from many threads."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tseg.runtime.service.store import SCHEMA_VERSION, IdempotencyConflict, JobStore, StoreError

OPTS = {"low": None, "high": None, "prune": True, "mpp": None, "level_tolerance": 0.0, "dct_scaling": False}


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path)
    yield s
    s.close()


def test_schema_is_versioned(tmp_path):
    s = JobStore(tmp_path)
    s.close()
    db = tmp_path / ".tseg-service" / "jobs.sqlite3"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this tseg-rt's"):
        JobStore(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ".tseg-service").mkdir()
    (tmp_path / "x" / ".tseg-service" / "jobs.sqlite3").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="move it away"):
        JobStore(tmp_path / "x")


def test_submit_dedupes_active_jobs_and_honours_keys(store):
    a = store.submit("/s/a.svs", OPTS)
    assert a.how == "created" and a.job.state == "pending" and a.job.stage == "queued"
    assert store.submit("/s/a.svs", OPTS).job.id == a.job.id  # equal and still pending
    assert store.submit("/s/a.svs", OPTS).how == "active"
    assert store.submit("/s/a.svs", {**OPTS, "low": 60}).how == "created"  # other options
    assert store.submit("/s/a.svs", OPTS, overwrite=True).how == "created"
    k = store.submit("/s/a.svs", OPTS, idempotency_key="k", request_sha256="r1")
    assert k.how == "active" and k.job.id == a.job.id  # the key now names that job
    assert store.submit("/s/b.svs", OPTS, idempotency_key="k", request_sha256="r1").how == "replayed"
    with pytest.raises(IdempotencyConflict, match="used for another request"):
        store.submit("/s/b.svs", OPTS, idempotency_key="k", request_sha256="r2")
    claimed = store.claim("w")
    store.finish(claimed.id, "success", outcome="done", result_folder="a")
    assert store.submit("/s/a.svs", OPTS).how == "created"  # finished: a new job (the resume rules decide)
    assert store.submit("/s/z.svs", OPTS, idempotency_key="k", request_sha256="r1").job.id == a.job.id


def test_claim_order_and_one_job_per_slide(store):
    first = store.submit("/s/a.svs", OPTS).job
    same_slide = store.submit("/s/a.svs", {**OPTS, "low": 60}).job
    other = store.submit("/s/b.svs", OPTS).job
    later = store.submit("/s/c.svs", OPTS).job
    got = store.claim("w1")
    assert got.id == first.id and got.state == "running" and got.attempts == 1 and got.worker == "w1"
    assert store.claim("w2").id == other.id  # a's second job waits while a runs
    store.finish(first.id, "success")
    assert store.claim("w1").id == same_slide.id
    store.requeue(same_slide.id, delay_s=60, detail="waiting")
    assert store.claim("w1").id == later.id and store.claim("w1") is None  # not due for a minute
    assert store.next_due() > time.time() + 50
    assert store.queue_position(store.get(same_slide.id)) == 0
    assert store.counts() == {"pending": 1, "running": 2, "success": 1, "failure": 0, "cancelled": 0}


def test_restart_requeues_running_jobs_then_gives_up(store):
    job = store.submit("/s/a.svs", OPTS).job
    doomed = store.submit("/s/b.svs", OPTS).job
    for n in range(1, 3):
        assert store.claim("w").id == job.id
        assert store.requeue_interrupted(max_interruptions=3) == (1, 0)
        back = store.get(job.id)
        assert back.state == "pending" and back.interruptions == n and "service stopped" in back.detail
    store.claim("w")
    assert store.requeue_interrupted(max_interruptions=3) == (0, 1)
    failed = store.get(job.id)
    assert failed.state == "failure" and failed.error_code == "interrupted" and "3 times" in failed.error_message
    running = store.claim("w")
    assert running.id == doomed.id
    store.cancel(doomed.id)
    assert store.get(doomed.id).state == "running" and store.get(doomed.id).cancel_requested
    store.requeue_interrupted()
    assert store.get(doomed.id).state == "cancelled"  # cancelled before the service died: stays cancelled


def test_cancel_and_prune(store):
    pending = store.submit("/s/a.svs", OPTS).job
    cancelled = store.cancel(pending.id)
    assert cancelled.state == "cancelled" and cancelled.error_code == "cancelled"
    assert store.cancel("nope") is None
    assert store.prune(3600) == 0 and store.prune(-1) == 1 and store.get(pending.id) is None


def test_concurrent_submissions_from_threads(tmp_path):
    store = JobStore(tmp_path)
    results: list = []
    barrier = threading.Barrier(20)

    def submit(i: int) -> None:
        barrier.wait()
        results.append(store.submit(f"/s/{i % 5}.svs", OPTS))
        results.append(store.submit("/s/k.svs", OPTS, idempotency_key="same", request_sha256="r"))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 40
    assert len({r.job.id for r in results if r.job.slide != "/s/k.svs"}) == 5  # one job per slide
    assert len({r.job.id for r in results if r.job.slide == "/s/k.svs"}) == 1
    assert store.counts()["pending"] == 6
    store.close()


def test_queue_limit_and_identical_overwrite_requests(store):
    """Issue 30, item 6: beyond ``max_pending`` pending jobs a new one is refused (an equal pending
    one is still returned); identical overwrite requests while one is pending return it."""
    from tseg.runtime.service.store import QueueFull

    first = store.submit("/s/a.svs", OPTS, overwrite=True, max_pending=2)
    again = store.submit("/s/a.svs", OPTS, overwrite=True, max_pending=2)
    assert (again.how, again.job.id) == ("active", first.job.id)
    assert store.submit("/s/a.svs", OPTS, max_pending=2).how == "created"  # not an overwrite: another job
    with pytest.raises(QueueFull, match="--max-queued 2") as full:
        store.submit("/s/b.svs", OPTS, max_pending=2)
    assert full.value.retry_after_s > 0
    assert store.submit("/s/a.svs", OPTS, overwrite=True, max_pending=2).job.id == first.job.id
    running = store.claim("w")
    assert running is not None and running.id == first.job.id
    assert store.submit("/s/a.svs", OPTS, overwrite=True, max_pending=2).how == "created"  # it runs: a new one
    assert store.counts()["pending"] == 2
