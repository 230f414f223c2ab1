"""The HTTP API of a real `tseg-rt serve` (bundled demonstration model, generated slides), over
HTTP on a free loopback port: submit, poll, fetch, resume rules, idempotency, concurrency,
listing, failures, health, metrics, the OpenAPI document, and every kind of bad request."""

from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import REPO, make_square_slide
from service_process import ServiceProcess, no_temporary_outputs, wait_job
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.cohort.identity import RESULT_MARKER
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.files import OUTPUT_FILES

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def service(slide_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    s = ServiceProcess("serve", out, ["--root", slide_root, "--report-interval", "0"], out.parent / "serve.log")
    s.start()
    yield s
    s.stop()
    assert not no_temporary_outputs(out)


@pytest.fixture(scope="module")
def client(service):
    with service.client() as c:
        yield c


def submit(client, path, **body):  # noqa: ANN001, ANN201
    return client.post("/v1/jobs", json={"path": str(path), **body})


def all_jobs(client) -> list[dict]:  # noqa: ANN001
    return client.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]


def test_submit_poll_fetch_same_files_as_run(client, service, slide_root, tmp_path):
    r = submit(client, slide_root / "a.tiff")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["state"] in ("pending", "running") and job["options"]["prune"] is True
    job = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()  # one long poll, no loop
    assert job["state"] == "success", job
    assert job["progress"] == {"stage": "done", "tiles_done": 1, "tiles_total": 1, "fraction": 1.0}
    assert job["result"]["outcome"] == "done" and job["result"]["folder"] == "a"
    assert job["result"]["areas"]["tumour_area_mm2"] > 0 and job["time_to_first_tile_s"] > 0
    assert job["links"]["cancel"] is None and job["attempts"] == 1

    listing = client.get(job["links"]["results"])
    assert listing.status_code == 200
    files = {f["name"]: f for f in listing.json()["files"]}
    assert set(files) == set(OUTPUT_FILES)
    reference = tmp_path / "run"
    with Segmenter(None) as seg:
        assert run_batch([slide_root / "a.tiff"], reference, seg)[0].status == "done"
    for name, f in files.items():
        got = client.get(f["url"])
        assert got.status_code == 200 and got.headers["content-type"].startswith(f["media_type"])
        assert len(got.content) == f["bytes"]
        if name != "summary.json":  # the same bytes as `tseg-rt run` writes
            assert got.content == (reference / "a" / name).read_bytes(), name
    summary = client.get(files["summary.json"]["url"]).json()
    assert summary == listing.json()["summary"] and summary["areas"] == job["result"]["areas"]
    assert (service.out / "a" / RESULT_MARKER).is_file()  # the layout of `tseg-rt run`
    geojson = client.get(files["tumour.geojson"]["url"])
    assert geojson.headers["content-type"].startswith("application/geo+json") and geojson.json()["features"]


def test_same_slide_again_reuses_or_postprocesses_the_result(client, slide_root):
    first = wait_job(client, submit(client, slide_root / "b.tiff").json()["id"])
    assert first["result"]["outcome"] == "done"
    again = submit(client, slide_root / "b.tiff")
    assert again.status_code == 202 and again.json()["id"] != first["id"]
    again = wait_job(client, again.json()["id"])
    assert again["result"]["outcome"] == "skipped" and again["result"]["folder"] == first["result"]["folder"]
    assert "finished with these settings" in again["detail"]
    assert again["result"]["areas"] == first["result"]["areas"]
    other = wait_job(client, submit(client, slide_root / "b.tiff", options={"low": 60, "high": 200}).json()["id"])
    assert other["result"]["outcome"] == "postprocessed" and other["options"]["low"] == 60
    assert client.get(f"/v1/jobs/{other['id']}/results").json()["summary"]["settings"]["low"] == 60
    gone = client.get(f"/v1/jobs/{first['id']}/results")  # the folder now holds the later thresholds
    assert gone.status_code == 410 and gone.json()["code"] == "gone"
    assert client.get(f"/v1/jobs/{first['id']}/results/mask.png").status_code == 410


def test_overlay_style_and_opacity_per_job(client, slide_root):
    """A job's overlay options reach Segmenter's settings (as `run --overlay-style` does): the
    summary records them and overlay.png is redrawn from the saved maps; the masks stay the same."""
    slide = slide_root / "overlay.tiff"
    if not slide.exists():
        make_square_slide(slide, seed=7)
    first = wait_job(client, submit(client, slide).json()["id"])
    assert first["state"] == "success" and first["options"]["overlay_style"] == "fill", first
    url = first["links"]["results"]
    default = client.get(f"{url}/overlay.png").content
    mask = client.get(f"{url}/mask.png").content
    body = {"overlay_style": "contour", "overlay_opacity": 0.8}
    job = wait_job(client, submit(client, slide, options=body).json()["id"])
    assert job["state"] == "success" and job["result"]["outcome"] == "postprocessed", job
    assert "overlay redrawn" in job["detail"] and job["options"]["overlay_style"] == "contour"
    listing = client.get(job["links"]["results"]).json()
    assert (listing["summary"]["settings"]["overlay_style"], listing["summary"]["settings"]["overlay_opacity"]) == (
        "contour", 0.8)
    contour = client.get(f"{job['links']['results']}/overlay.png")
    assert contour.status_code == 200 and contour.content[:8] == b"\x89PNG\r\n\x1a\n" and contour.content != default
    assert client.get(f"{job['links']['results']}/mask.png").content == mask  # only the picture changed
    gone = client.get(url)  # the folder's overlay is now the later job's
    assert gone.status_code == 410 and gone.json()["code"] == "gone"


def test_idempotency_key(client, slide_root):
    body = {"path": str(slide_root / "sub" / "s09.tiff")}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == 202
    retry = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-17"})
    assert retry.json()["id"] == first.json()["id"] and retry.headers["idempotent-replayed"] == "true"
    wait_job(client, first.json()["id"])
    late = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-17"})
    assert late.json()["id"] == first.json()["id"] and late.json()["state"] == "success"
    reused = client.post("/v1/jobs", json={**body, "overwrite": True}, headers={"Idempotency-Key": "order-17"})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert first.json()["id"] in reused.json()["detail"]
    assert sum(j["slide"].endswith("s09.tiff") for j in all_jobs(client)) == 1


def test_twenty_concurrent_submissions(client, service, slide_root):
    slides = sorted((slide_root / "sub").glob("s0[0-8].tiff")) + [slide_root / "sub" / "s00.tiff"]
    bodies = [{"path": str(slides[i % len(slides)])} for i in range(20)]

    def post(body: dict):
        return client.post("/v1/jobs", json=body)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, bodies))
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    jobs = [wait_job(client, i, timeout=180) for i in ids]
    assert all(j["state"] == "success" for j in jobs), jobs
    for slide in {str(s) for s in slides}:  # each slide computed once; the rest reused it
        mine = [j for j in jobs if j["slide"] == slide]
        assert sum(j["result"]["outcome"] == "done" for j in mine) == 1, mine
    names = {p.name for p in service.out.iterdir() if p.name.startswith("s0")}
    assert {s.stem for s in slides} <= names and not [n for n in names if "-" in n]  # one folder per slide
    assert not no_temporary_outputs(service.out)
    # The same Idempotency-Key from 20 clients at once: one job.
    with ThreadPoolExecutor(20) as pool:
        same = list(pool.map(lambda _: client.post("/v1/jobs", json=bodies[0], headers={"Idempotency-Key": "burst"}),
                             range(20)))
    assert len({r.json()["id"] for r in same}) == 1 and all(r.status_code in (200, 202) for r in same)


def test_list_jobs_pages_and_filters(client, slide_root):
    for name in ("s01", "s02", "s03"):
        wait_job(client, submit(client, slide_root / "sub" / f"{name}.tiff").json()["id"])
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["jobs"]) == 2 and page["next"]
    older = client.get(page["next"]).json()
    assert older["jobs"] and not {j["id"] for j in older["jobs"]} & {j["id"] for j in page["jobs"]}
    assert page["jobs"][0]["submitted_at"] >= page["jobs"][1]["submitted_at"] >= older["jobs"][0]["submitted_at"]
    done = client.get("/v1/jobs", params=[("state", "success"), ("state", "failure")]).json()["jobs"]
    assert done and all(j["state"] in ("success", "failure") for j in done)
    for params in ({"state": "finished"}, {"limit": 0}, {"limit": 5000}, {"before": "x"}):
        bad = client.get("/v1/jobs", params=params)
        assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM, params


def test_failed_slide_has_a_code_and_is_in_the_report(client, service, slide_root):
    job = wait_job(client, submit(client, slide_root / "broken.svs").json()["id"])
    assert job["state"] == "failure" and job["error"]["code"] == "unsupported_slide"
    assert "broken.svs" in job["error"]["message"] and job["result"] is None
    r = client.get(f"/v1/jobs/{job['id']}/results")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    deadline = time.monotonic() + 30
    rows: list[dict] = []
    while time.monotonic() < deadline:  # the report is written when the queue has drained
        try:
            with open(service.out / "cohort.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError:
            rows = []
        if any(r["slide"].endswith("broken.svs") for r in rows):
            break
        time.sleep(0.2)
    failed = [r for r in rows if r["slide"].endswith("broken.svs")]
    assert failed and failed[0]["status"] == "failed", rows
    assert (service.out / "report.html").is_file()


def test_unknown_job(client):
    for r in (client.get("/v1/jobs/nope"), client.post("/v1/jobs/nope/cancel"), client.get("/v1/jobs/nope/results")):
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"


def test_bad_requests_are_refused_with_problem_details(client, slide_root, tmp_path, service):
    outside = tmp_path / "outside.tiff"
    outside.write_bytes((slide_root / "a.tiff").read_bytes())
    link = slide_root / "link-out.tiff"
    link_dir = slide_root / "dir-out"
    if not link.is_symlink():
        os.symlink(outside, link)
        os.symlink(tmp_path, link_dir)
    before = len(all_jobs(client))
    root = str(slide_root)
    cases = [
        ({"path": "/etc/hostname"}, 403, "outside_roots"),
        ({"path": str(outside)}, 403, "outside_roots"),
        ({"path": str(link)}, 403, "outside_roots"),
        ({"path": f"{link_dir}/outside.tiff"}, 403, "outside_roots"),
        ({"path": f"{root}/../{Path(root).name}/a.tiff"}, 400, "path_traversal"),
        ({"path": "sub/../a.tiff"}, 400, "path_traversal"),
        ({"path": f"{service.out}/a/probability.tif"}, 403, "outside_roots"),
        ({"path": f"{root}/missing.svs"}, 404, "not_found"),
        ({"path": f"{root}/notes.txt"}, 422, "not_a_slide"),
        ({"path": f"{root}/.hidden.tiff"}, 422, "not_a_slide"),
        ({"path": f"{root}/sub"}, 422, "not_a_slide"),
        ({"path": "a\u0000.tiff"}, 400, "bad_path"),
        ({"path": ""}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"path": "a.tiff", "priority": 1}, 422, "invalid_request"),
        ({"path": "a.tiff", "overwrite": "yes"}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"low": "80"}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"lowx": 80}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"low": 300}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"low": 200, "high": 100}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"high": 40}}, 422, "invalid_options"),  # below the model's low (85)
        ({"path": "a.tiff", "options": {"mpp": 500}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"mpp": [0.5]}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": "low=80"}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"overlay_style": "outline"}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"overlay_opacity": 1.5}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"overlay_opacity": "0.5"}}, 422, "invalid_request"),
        ({"path": "a.tiff", "options": {"dicom_out": True}}, 422, "invalid_options"),  # served without --dicom-out
        ({"path": ["a.tiff"]}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/jobs", json=body)
        assert (r.status_code, r.headers["content-type"]) == (status, PROBLEM), (body, r.text)
        problem = r.json()
        assert problem["code"] == code and problem["status"] == status, (body, problem)
        assert problem["type"] == f"urn:tseg-rt:problem:{code}" and problem["title"] and problem["detail"]
        assert problem["instance"] == "/v1/jobs"
    unknown = client.post("/v1/jobs", json={"path": "a.tiff", "options": {"lowx": 80}}).json()
    assert unknown["errors"][0]["location"] == "body.options.lowx" and "lowx" in unknown["detail"]
    assert str(outside) not in client.post("/v1/jobs", json={"path": str(link)}).json()["detail"]  # target not told

    raw = [
        (dict(content=b'{"path": ', headers={"content-type": "application/json"}), 400, "invalid_json"),
        (dict(content=b'{"path": "a.tiff"}', headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
        (dict(content=b'path=a.tiff', headers={"content-type": "application/x-www-form-urlencoded"}), 415,
         "unsupported_media_type"),
        (dict(content=b"[" + b"1," * 40000 + b"1]", headers={"content-type": "application/json"}), 413,
         "body_too_large"),
        (dict(content=(b"x" * 8192 for _ in range(20)), headers={"content-type": "application/json"}), 413,
         "body_too_large"),  # streamed (chunked, no Content-Length)
    ]
    for kwargs, status, code in raw:
        r = client.post("/v1/jobs", **kwargs)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert client.get("/v2/jobs").json()["code"] == "not_found"
    assert client.delete("/v1/jobs").status_code == 405
    r = client.post("/v1/jobs", json={"path": "a.tiff"}, headers={"Origin": "http://evil.example"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden_origin")
    r = client.get("/v1/info", headers={"Host": "evil.example"})  # DNS rebinding
    assert (r.status_code, r.json()["code"]) == (403, "forbidden_host")
    assert client.get("/v1/health/live", headers={"Host": "localhost:1"}).status_code == 200
    assert len(all_jobs(client)) == before, "a refused request made a job"


def test_health_info_metrics_openapi(client, service, slide_root):
    assert client.get("/v1/health/live").json() == {"live": True}
    ready = client.get("/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    worker = ready.json()["workers"][0]
    assert worker["state"] == "ready" and worker["backend"]["kind"] == "onnxruntime" and worker["warmup_s"] >= 0
    info = client.get("/v1/info").json()
    assert info["roots"] == [os.path.realpath(slide_root)] and info["api_version"] == "1.0.0"
    assert info["versions"]["onnxruntime"] and info["results"] == str(service.out.resolve())
    wait_job(client, submit(client, slide_root / "a.tiff", overwrite=True).json()["id"])
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in metrics.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["tseg_ready"] == 1 and samples['tseg_jobs{state="success"}'] >= 1
    assert samples['tseg_tiles_total{worker="cpu"}'] >= 1 and samples["tseg_job_queue_seconds_count"] >= 1
    assert samples["tseg_time_to_first_tile_seconds_count"] >= 1 and samples["process_resident_memory_bytes"] > 0
    assert samples['tseg_jobs_submitted_total{result="created"}'] >= 1
    assert samples["tseg_long_polls_waiting"] == 0  # none waits now
    served = client.get("/v1/openapi.json").json()
    assert served == json.loads((REPO / "docs" / "openapi.json").read_text()), (
        "docs/openapi.json is not current: run python -m tseg.runtime.service.openapi")


def test_a_jobs_result_in_the_viewer(client, slide_root):
    """`GET /v1/jobs/{id}/viewer` leads to the slide viewer of the job's result, under the
    service's access rules; a result of the bundled model carries the "NOT a diagnostic model" banner."""
    job = wait_job(client, submit(client, slide_root / "b.tiff").json()["id"])
    assert job["state"] == "success", job
    r = client.get(f"/v1/jobs/{job['id']}/viewer", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/viewer/slides/{job['result']['folder']}/"
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "NOT a diagnostic model" in page.text
    assert client.get(r.headers["location"] + "slide.dzi").text.startswith("<?xml")
    assert client.get("/viewer/").status_code == 200
    assert client.get("/viewer/static/bokeh/js/bokeh.min.js").status_code == 200
    assert client.get("/v1/jobs/nosuchjob/viewer").json()["code"] == "job_not_found"
    assert client.get("/viewer/slides/.tseg-service/slide.dzi").status_code == 404
    other = client.get("/viewer/", headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and other.json()["code"] == "forbidden_origin"
    # The verdict given in the viewer is in the job's result.
    assert client.get(f"/v1/jobs/{job['id']}").json()["result"]["review"] is None
    put = client.put(r.headers["location"] + "review", json={"verdict": "accept", "reviewer": "Dr D"})
    assert put.status_code == 200, put.text
    review = client.get(f"/v1/jobs/{job['id']}").json()["result"]["review"]
    assert review["verdict"] == "accept" and review["stale"] is False and review["reviewer"] == "Dr D"
