"""DICOM outputs of the service and the hot folder: `serve --dicom-out` and `watch --dicom-out` make
each job's DICOM objects (read back with pydicom: a Segmentation), the job's results list and serve
them, a job may turn them off, and the overlay flags of `watch` reach its results. (Bad flags of
`serve` and `watch`: tests/runtime/test_public_api.py.)"""

from __future__ import annotations

import io
import shutil
import time

import pytest

from helpers import make_square_slide
from service_process import wait_job
from tseg.runtime.outputs.summary import read_summary

pytest.importorskip("highdicom")

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds
pydicom = pytest.importorskip("pydicom")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def test_serve_with_dicom_out(service_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    make_square_slide(root / "d.tiff")
    make_square_slide(root / "e.tiff", seed=3)
    svc = service_factory("serve", tmp_path / "out", "--root", root, "--dicom-out", "--report-interval", "0")
    with svc.client() as c:
        info = c.get("/v1/info").json()
        assert info["dicom"] == {"convert_slide": False, "stow_url": None, "credentials_file": False,
                                 "site_metadata_slides": 0} and info["defaults"]["dicom_out"] is True
        job = wait_job(c, c.post("/v1/jobs", json={"path": "d.tiff"}).json()["id"])
        assert job["state"] == "success" and job["options"]["dicom_out"] is True, job
        section = job["result"]["dicom"]
        assert section["folder"] == "dicom" and section["series"]["seg"]["instances"] >= 1, section
        files = {f["name"]: f for f in c.get(job["links"]["results"]).json()["files"]}
        assert "dicom/manifest.json" in files and "dicom/tumour-seg-0.dcm" in files, sorted(files)
        seg = c.get(files["dicom/tumour-seg-0.dcm"]["url"])
        assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
        ds = pydicom.dcmread(io.BytesIO(seg.content))
        assert (ds.SOPClassUID, ds.Modality, ds.SegmentationType) == (SEGMENTATION_STORAGE, "SEG", "BINARY")
        assert [s.SegmentLabel for s in ds.SegmentSequence][:1] and len(ds.SegmentSequence) == 2
        assert c.get(files["dicom/manifest.json"]["url"]).json()["objects"]
        for bad in ("dicom/%2e%2e/summary.json", "dicom/%2e%2e/%2e%2e/d/mask.png", "dicom/missing.dcm", "dicom"):
            r = c.get(f"{job['links']['results']}/{bad}")
            assert (r.status_code, r.json()["code"]) == (404, "result_not_found"), (bad, r.text)  # nothing outside dicom/

        off = wait_job(c, c.post("/v1/jobs", json={"path": "e.tiff", "options": {"dicom_out": False}}).json()["id"])
        assert off["state"] == "success" and off["result"].get("dicom") is None, off
        names = [f["name"] for f in c.get(off["links"]["results"]).json()["files"]]
        assert not [n for n in names if n.startswith("dicom/")] and not (svc.out / "e" / "dicom").exists()


def test_watch_with_dicom_out_and_an_overlay_style(service_factory, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    make_square_slide(tmp_path / "w.tiff")
    service_factory("watch", out, inbox, "--settle", 0.5, "--poll", 0.2, "--report-interval", "0", "--dicom-out",
                    "--overlay-style", "contour", "--overlay-opacity", "0.5")
    shutil.copy(tmp_path / "w.tiff", inbox / "w.tiff")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out / "w" / "dicom" / "manifest.json").is_file():
        time.sleep(0.2)
    summary = read_summary(out / "w")
    assert summary is not None and summary["dicom"]["series"]["seg"]["instances"] >= 1, summary
    assert (summary["settings"]["overlay_style"], summary["settings"]["overlay_opacity"]) == ("contour", 0.5)
    ds = pydicom.dcmread(str(out / "w" / "dicom" / "tumour-seg-0.dcm"))
    assert (ds.SOPClassUID, ds.Modality) == (SEGMENTATION_STORAGE, "SEG")

