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
    s = ServiceProcess("serve", out, ["--root", slide_root, "--report-interval", "0", "--max-queued", "3"],
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


@pytest.mark.timeout(180)
def test_queue_limit_answers_429_with_retry_after(client):
    """Item 6: the service was started with --max-queued 3: a burst of distinct submissions gets
    429 problem+json with Retry-After once 3 are pending; the accepted ones all run."""
    answers = [client.post("/v1/jobs", json={"path": f"sub/s{i:02d}.tiff", "options": {"overlay_opacity": 0.1 + i / 100}})
               for i in range(10)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert refused[0].headers["content-type"] == PROBLEM and int(refused[0].headers["retry-after"]) > 0
    assert refused[0].json()["code"] == "queue_full" and "--max-queued 3" in refused[0].json()["detail"]
    for r in answers:
        if r.status_code == 202:
            assert wait_job(client, r.json()["id"])["state"] == "success"
