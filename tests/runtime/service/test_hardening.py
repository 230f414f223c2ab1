"""What a scanner room's files and clients can do to a real `tseg-rt serve` (issue 30): files a
slide names outside the roots, links planted in a result folder, requests that crashed a handler,
errors that were not problem+json, the queue's limit, and smaller leaks."""

from __future__ import annotations

import os
import socket

import pytest

from service_process import ServiceProcess, wait_job

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outside")
    (folder / "private.jpg").write_bytes(b"\xff\xd8secret")
    return folder


@pytest.fixture(scope="module")
def service(slide_root, outside, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    vms = "[Virtual Microscope Specimen]\nImageFile={}\n"
    (slide_root / "outside.vms").write_text(vms.format("../" + outside.name + "/private.jpg"))
    (slide_root / "missing.vms").write_text(vms.format("../" + outside.name + "/does-not-exist.jpg"))
    os.mkfifo(slide_root / "pipe.jpg")
    (slide_root / "fifo.vms").write_text(vms.format("pipe.jpg"))
    s = ServiceProcess("serve", out, ["--root", slide_root, "--report-interval", "0", "-v"],
                       out.parent / "serve.log")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(service):
    with service.client() as c:
        yield c


@pytest.mark.timeout(120)
def test_files_a_slide_names_outside_the_roots_are_refused(client, slide_root):
    """Items 1-2: nothing outside the roots is opened, and the refusal is no existence oracle; a
    FIFO a slide names is refused without opening it (the worker stays free)."""
    answers = [client.post("/v1/jobs", json={"path": name}) for name in ("outside.vms", "missing.vms")]
    assert [(r.status_code, r.headers["content-type"], r.json()["code"]) for r in answers] == \
        [(403, PROBLEM, "outside_roots")] * 2
    details = [r.json()["detail"].replace(n, "X") for r, n in zip(answers, ("outside.vms", "missing.vms"))]
    assert details[0].replace("private.jpg", "Y") == details[1].replace("does-not-exist.jpg", "Y")
    r = client.post("/v1/jobs", json={"path": "fifo.vms"})
    assert (r.status_code, r.json()["code"]) == (422, "not_a_slide") and "FIFO" in r.json()["detail"]
    job = client.post("/v1/jobs", json={"path": "a.tiff"}).json()
    assert wait_job(client, job["id"])["state"] == "success"


@pytest.mark.timeout(120)
def test_result_files_are_never_served_through_a_link(client, service, slide_root):
    """Item 3: a result file replaced by a link (to a file outside, /etc/passwd, the job store) is
    refused (410) and left out of the listing; item 11: a missing result file has its own code."""
    job = wait_job(client, client.post("/v1/jobs", json={"path": "b.tiff"}).json()["id"])
    assert job["state"] == "success", job
    folder = service.out / job["result"]["folder"]
    secret = service.out.parent / "secret.txt"
    secret.write_text("secret")
    for name, target in (("mask.png", secret), ("tumour.geojson", "/etc/passwd"),
                         ("probability.tif", service.out / ".tseg-service" / "jobs.sqlite3")):
        (folder / name).unlink()
        os.symlink(target, folder / name)
    (folder / "overview.png").unlink()
    base = f"/v1/jobs/{job['id']}/results"
    listed = {f["name"] for f in client.get(base).json()["files"]}
    assert listed and not listed & {"mask.png", "tumour.geojson", "probability.tif", "overview.png"}, listed
    for name in ("mask.png", "tumour.geojson", "probability.tif"):
        r = client.get(f"{base}/{name}")
        assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (410, PROBLEM, "gone"), (name, r.text)
    for name in ("overview.png", "nothing.png"):
        r = client.get(f"{base}/{name}")
        assert (r.status_code, r.json()["code"]) == (404, "result_not_found"), (name, r.text)


@pytest.mark.timeout(300)
def test_queue_limit_answers_429_with_retry_after(service_factory, slow_model, slide_root, tmp_path):
    """Item 6: a service started with --max-queued 3, its one worker busy with a slide (the slow
    model: several seconds a slide): a burst of distinct submissions is accepted until 3 are
    pending, and every one after that gets 429 problem+json with Retry-After; the accepted ones
    all run. The worker is still on its first job after the burst, so the queue held exactly
    those 3 for the whole burst (a job that ended meanwhile would have made room for a fourth)."""
    svc = service_factory("serve", tmp_path / "out", "--root", slide_root, "--engine", slow_model,
                          "--report-interval", "0", "--max-queued", "3")
    with svc.client() as client:
        busy = client.post("/v1/jobs", json={"path": "a.tiff"})
        assert busy.status_code == 202, busy.text
        wait_job(client, busy.json()["id"], until=lambda job: job["state"] == "running")
        answers = [client.post("/v1/jobs", json={"path": f"sub/s{i:02d}.tiff",
                                                 "options": {"overlay_opacity": 0.1 + i / 100}}) for i in range(6)]
        still = client.get(f"/v1/jobs/{busy.json()['id']}").json()
        assert still["state"] == "running", f"the first job ended during the burst, which proves nothing: {still}"
        assert [r.status_code for r in answers] == [202] * 3 + [429] * 3, [(r.status_code, r.text) for r in answers]
        refused = answers[3]
        assert refused.headers["content-type"] == PROBLEM and int(refused.headers["retry-after"]) > 0
        assert refused.json()["code"] == "queue_full" and "--max-queued 3" in refused.json()["detail"]
        for r in [busy, *answers[:3]]:
            assert wait_job(client, r.json()["id"], timeout=240)["state"] == "success"


def raw_request(service, data: bytes, timeout: float = 30.0) -> bytes:  # noqa: ANN001
    """Send ``data`` as it is and read the answer until the service closes the connection."""
    host, port = service.url.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_requests_that_crashed_a_handler_are_4xx_problems(client, service):
    """Item 9: a path with a name too long for the file system, a page cursor beyond SQLite's
    integers: 4xx problem+json, no traceback in the log."""
    r = client.post("/v1/jobs", json={"path": "x" * 4000 + ".tiff"})
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (400, PROBLEM, "bad_path"), r.text
    r = client.get("/v1/jobs", params={"before": str(2**63)})
    assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (422, PROBLEM, "invalid_request"), r.text
    assert "Traceback" not in service.log()


def test_every_error_is_problem_json(client, service):
    """Item 10: bad and unsatisfiable ranges, a bad Content-Length; item 12: duplicate JSON keys."""
    job = wait_job(client, client.post("/v1/jobs", json={"path": "a.tiff"}).json()["id"])
    url = f"/v1/jobs/{job['id']}/results/summary.json"
    assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    for value, status, code in (("bytes=abc", 400, "invalid_range"), ("bytes=99999999-", 416, "range_not_satisfiable")):
        r = client.get(url, headers={"Range": value})
        assert (r.status_code, r.headers["content-type"], r.json()["code"]) == (status, PROBLEM, code), (value, r.text)
    answer = raw_request(service, b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: abc\r\n\r\n{}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and PROBLEM.encode() in head.lower(), answer
    assert b'"code": "invalid_request"' in body
    r = client.post("/v1/jobs", content=b'{"path": "/etc/passwd", "path": "a.tiff"}',
                    headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_json") and "'path' appears twice" in r.json()["detail"]


@pytest.mark.timeout(120)
def test_idle_and_slow_connections_cannot_lock_clients_out(client, service):
    """Item 5: more idle sockets than uvicorn's old connection limit (512) do not lock anyone out,
    and a connection whose request head never completes is closed (408) within a minute."""
    host, port = service.url.rsplit("/", 1)[-1].rsplit(":", 1)
    slow = socket.create_connection((host, int(port)), timeout=60)
    slow.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end of its head
    idle = [socket.create_connection((host, int(port)), timeout=60) for _ in range(520)]
    try:
        r = client.get("/v1/health/live")
        assert r.status_code == 200, r.text
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
        first = idle[0].recv(65536)  # idle since connecting: closed as well (after a 408)
        assert first.startswith(b"HTTP/1.1 408") and idle[0].recv(65536) == b"", first
    finally:
        for s in [slow, *idle]:
            s.close()


def test_smaller_leaks(client, service):
    """Item 12: a token sent in the query is not written to the access log (-v), and -0.0 is 0.0
    for the equal-job check (stored as 0.0)."""
    import math
    import time

    r = client.get("/v1/jobs", params={"token": "query-secret-0123456789", "limit": 1})
    assert r.status_code == 200
    time.sleep(0.5)
    log = service.log()
    assert "GET /v1/jobs?token=REDACTED&limit=1" in log and "query-secret" not in log, log[-2000:]
    job = client.post("/v1/jobs", json={"path": "a.tiff", "options": {"overlay_opacity": -0.0}}).json()
    assert math.copysign(1.0, job["options"]["overlay_opacity"]) == 1.0, job["options"]
