"""A real service with a deliberately slow model (the colour model's outputs, several seconds a
slide): cancel a running job, stop it with SIGTERM and kill it with SIGKILL mid-job, restart, and
lose nothing: every submitted job ends once, none is reported done before its result is
complete, and the result is byte-identical to `tseg-rt run`'s."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from helpers import make_colour_model, make_square_slide
from service_process import no_temporary_outputs, wait_job
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.service.store import JobStore

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "slides"
    root.mkdir()
    make_square_slide(root / "a.tiff")
    make_square_slide(root / "b.tiff", square_um=(200, 200, 300, 300), seed=2)
    return root


def running_with_tiles(n: int):  # noqa: ANN201
    return lambda job: job["state"] == "running" and (job["progress"]["tiles_done"] or 0) >= n


def stored(out: Path, job_id: str):  # noqa: ANN201
    store = JobStore(out)
    try:
        return store.get(job_id)
    finally:
        store.close()


def test_cancel_running_and_pending_jobs(service_factory, slow_model, root, tmp_path):
    out = tmp_path / "out"
    svc = service_factory("serve", out, "--root", root, "--engine", slow_model, "--report-interval", "0")
    with svc.client() as c:
        a = c.post("/v1/jobs", json={"path": str(root / "a.tiff")}).json()
        b = c.post("/v1/jobs", json={"path": str(root / "b.tiff")}).json()
        running = wait_job(c, a["id"], until=running_with_tiles(2), timeout=60)
        assert running["progress"]["stage"] == "inference" and running["progress"]["tiles_total"] == 42
        later = c.get(f"/v1/jobs/{a['id']}", params={"wait": 0.3}).json()  # a long poll that times out
        assert later["state"] == "running" and later["progress"]["tiles_done"] >= running["progress"]["tiles_done"]
        assert c.get(f"/v1/jobs/{a['id']}", params={"wait": 61}).status_code == 422
        pending = c.post(f"/v1/jobs/{b['id']}/cancel")
        assert pending.status_code == 200 and pending.json()["state"] == "cancelled"
        assert pending.json()["error"] == {"code": "cancelled", "message": "cancelled before it started"}
        r = c.post(f"/v1/jobs/{a['id']}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        job = wait_job(c, a["id"], timeout=60)
        assert job["state"] == "cancelled" and job["error"]["code"] == "cancelled", job
        assert job["progress"]["tiles_done"] < 42
        assert c.post(f"/v1/jobs/{a['id']}/cancel").json()["state"] == "cancelled"  # harmless again
        assert c.get(f"/v1/jobs/{a['id']}/results").status_code == 409
        assert not (out / "a").exists() and not (out / "b").exists() and not no_temporary_outputs(out)
        assert c.get("/metrics").text.count('tseg_jobs_finished_total{state="cancelled"} 1') == 1


def test_sigterm_and_sigkill_mid_job_lose_nothing(service_factory, slow_model, root, tmp_path):
    reference = tmp_path / "reference"  # the colour model: the slow model's outputs, quickly
    with Segmenter(make_colour_model(tmp_path / "colour.onnx")) as seg:
        run_batch([root / "a.tiff", root / "b.tiff"], reference, seg)
    out = tmp_path / "out"
    args = ("--root", root, "--engine", slow_model, "--report-interval", "0")

    first = service_factory("serve", out, *args)
    with first.client() as c:
        a = c.post("/v1/jobs", json={"path": str(root / "a.tiff")}, headers={"Idempotency-Key": "a-1"}).json()
        b = c.post("/v1/jobs", json={"path": str(root / "b.tiff")}).json()
        wait_job(c, a["id"], until=running_with_tiles(2), timeout=60)
    assert first.stop() == 0  # SIGTERM, as `systemctl stop`: a clean exit; the running job goes back to the queue
    assert "stopping (running jobs go back to the queue)" in first.log()
    job = stored(out, a["id"])
    assert (job.state, job.detail) == ("pending", "requeued: the service stopped while processing it")
    assert stored(out, b["id"]).state == "pending"
    assert not (out / "a").exists() and not no_temporary_outputs(out)

    second = service_factory("serve", out, *args)
    with second.client() as c:
        wait_job(c, a["id"], until=running_with_tiles(3), timeout=60)
    second.kill(signal.SIGKILL)  # no chance to clean up
    assert stored(out, a["id"]).state == "running"  # as the dead process left it
    assert not (out / "a" / SUMMARY).exists(), "a killed service must not leave a finished-looking result"

    third = service_factory("serve", out, *args)
    with third.client() as c:
        done_a = wait_job(c, a["id"], timeout=120)
        done_b = wait_job(c, b["id"], timeout=120)
        assert done_a["state"] == done_b["state"] == "success", (done_a, done_b)
        assert done_a["attempts"] == 3 and done_a["result"]["outcome"] == "done"
        jobs = c.get("/v1/jobs").json()["jobs"]
        assert sorted(j["id"] for j in jobs) == sorted([a["id"], b["id"]])  # nothing lost, nothing doubled
        retry = c.post("/v1/jobs", json={"path": str(root / "a.tiff")}, headers={"Idempotency-Key": "a-1"})
        assert retry.json()["id"] == a["id"]  # the key survived the restarts
    assert "1 job(s) were running when the service last stopped: 1 requeued" in third.log()
    for name in ("a", "b"):  # the overlay's legend names the model, which differs from the reference's
        same = [p.name for p in (reference / name).iterdir() if p.name not in (SUMMARY, "overlay.png")]
        assert same and all((out / name / f).read_bytes() == (reference / name / f).read_bytes() for f in same)
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(p.name for p in (reference / name).iterdir())
    assert not no_temporary_outputs(out)


@pytest.mark.timeout(180)
def test_sigterm_during_a_long_poll_stops_at_once(service_factory, slow_model, root, tmp_path):
    """Issue 30, items 7-8: with a client long-polling the running job (?wait=60), SIGTERM stops
    the job at its next tile (back to pending, not run to success), answers the long poll at once,
    starts nothing new (the pending job keeps 0 attempts) and exits 0.

    "At once" is shown by what happened, not by a clock: SIGTERM is sent only once the service
    counts the poll as waiting (``tseg_long_polls_waiting``); the poll asked to wait 60 s, longer
    than uvicorn's graceful shutdown (30 s, after which it cancels the requests still open: no
    answer), so a 200 with the job not yet ended can only be the stop's answer; and the log shows
    neither that cancellation nor a worker that did not stop in time. The one clock left is
    ``stop(timeout=80)``: what systemd allows (TimeoutStopSec=90 in docs/tseg-rt.service, then
    SIGKILL), not a claim about speed (a stop takes seconds), and it keeps a hung stop from hanging
    the test."""
    import threading

    import httpx

    out = tmp_path / "out"
    svc = service_factory("serve", out, "--root", root, "--engine", slow_model, "--report-interval", "0")
    answered: dict = {}
    with svc.client() as c, svc.client() as watcher:
        a = c.post("/v1/jobs", json={"path": str(root / "a.tiff")}).json()
        b = c.post("/v1/jobs", json={"path": str(root / "b.tiff")}).json()
        wait_job(c, a["id"], until=running_with_tiles(2), timeout=60)

        def long_poll() -> None:
            try:
                r = c.get(f"/v1/jobs/{a['id']}", params={"wait": 60})
                answered.update(status=r.status_code, job=r.json())
            except httpx.TransportError as exc:  # the service closed the connection without an answer
                answered.update(error=repr(exc))

        def waiting_polls() -> float:
            for line in watcher.get("/metrics").text.splitlines():
                if line.startswith("tseg_long_polls_waiting "):
                    return float(line.split()[1])
            raise AssertionError("/metrics has no tseg_long_polls_waiting")

        poller = threading.Thread(target=long_poll)
        poller.start()
        deadline = time.monotonic() + 60
        while waiting_polls() < 1:  # the service has the long poll and waits in it
            assert poller.is_alive(), f"the long poll ended before SIGTERM: {answered}"
            assert time.monotonic() < deadline, "the long poll did not reach the service in 60 s"
            time.sleep(0.05)
        assert svc.stop(timeout=80) == 0, svc.log()
        poller.join(60)  # the process has ended: its connections are closed, answered or not
        assert not poller.is_alive(), "the long poll is still open after the service exited"
    log = svc.log()
    assert "error" not in answered, f"the long poll got no answer: {answered['error']}\n{log}"
    assert answered["status"] == 200 and answered["job"]["state"] in ("running", "pending"), answered
    assert "timeout graceful shutdown exceeded" not in log and "did not stop within" not in log, log
    job, pending = stored(out, a["id"]), stored(out, b["id"])
    assert (job.state, job.detail) == ("pending", "requeued: the service stopped while processing it")
    assert (pending.state, pending.attempts) == ("pending", 0)
    assert "error" not in log.lower()
