"""The viewer's HTTP application on a real result (a generated slide segmented by a real ONNX
model): Deep Zoom routes, layers, errors as problem+json, verdicts, and serve's access rules."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tseg.runtime.service.viewer.app import create_viewer_app
from tseg.runtime.service.viewer.deepzoom import DeepZoom
from tseg.runtime.service.viewer.library import Library

TOKEN = "t" * 24


def client_for(out, token=None, **kwargs):
    library = Library(out)
    return TestClient(create_viewer_app(library, token), base_url="http://127.0.0.1", **kwargs), library


@pytest.fixture(scope="module")
def client(viewer_result):
    c, library = client_for(viewer_result["out"])
    yield c
    library.close()


def test_index_page_and_descriptors(client, viewer_result):
    r = client.get("/")
    assert r.status_code == 200 and 'href="slides/a/"' in r.text and "not reviewed" in r.text
    w, h = viewer_result["size_level0"]
    for layer, fmt in (("slide", "jpeg"), ("probability", "png"), ("mask", "png"), ("tissue", "png")):
        r = client.get(f"/slides/a/{layer}.dzi")
        assert r.status_code == 200, r.text
        assert r.text == DeepZoom(w, h, format=fmt).dzi()
        size = ET.fromstring(r.text)[0].attrib
        assert (int(size["Width"]), int(size["Height"])) == (w, h)
    page = client.get("/slides/a/")
    assert page.status_code == 200 and "../../static/bokeh/js/bokeh.min.js" in page.text and "NOT a diagnostic" not in page.text
    assert client.get("/static/bokeh/js/bokeh.min.js").status_code == 200
    geo = client.get("/slides/a/tumour.geojson")
    assert geo.status_code == 200 and geo.json()["type"] == "FeatureCollection"


def test_tiles_and_the_overlay_on_the_tumour(client, viewer_result):
    """At full resolution the tumour layer is on the slide's known square and nowhere else."""
    w, h = viewer_result["size_level0"]
    dz = DeepZoom(w, h)
    top = dz.level_count - 1
    r = client.get(f"/slides/a/slide_files/{top}/0_0.jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape == (255, 255, 3)
    sx, sy, sw, sh = viewer_result["square_level0"]
    alpha = np.zeros((h, w), np.uint8)
    cols, rows = dz.level_tiles[top]
    for col in range(cols):
        for row in range(rows):
            r = client.get(f"/slides/a/mask_files/{top}/{col}_{row}.png")
            tile = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
            x, y, tw, th = dz.tile_box(top, col, row)
            alpha[y : y + th, x : x + tw] = tile[..., 3]
    margin = 12  # the mask is made at 5 µm/px: 10 level-0 px here
    assert (alpha[sy + margin : sy + sh - margin, sx + margin : sx + sw - margin] > 0).all()
    outside = np.ones_like(alpha, bool)
    outside[sy - margin : sy + sh + margin, sx - margin : sx + sw + margin] = False
    assert not alpha[outside].any()
    assert client.get(f"/slides/a/probability_files/{top - 3}/0_0.png").headers["content-type"] == "image/png"


@pytest.mark.parametrize("url,status,code", [
    ("/slides/zz/", 404, "not_found"),
    ("/slides/zz/slide.dzi", 404, "not_found"),
    ("/slides/a/nothing.dzi", 404, "not_found"),
    ("/slides/a/slide_files/99/0_0.jpeg", 404, "not_found"),
    ("/slides/a/slide_files/12/999_0.jpeg", 404, "not_found"),
    ("/slides/a/slide_files/12/0_0.png", 404, "not_found"),
    ("/slides/a/slide_files/x/0_0.jpeg", 400, "bad_tile"),
    ("/slides/a/slide_files/12/a_0.jpeg", 400, "bad_tile"),
    ("/slides/a/slide_files/12/0_-1.jpeg", 400, "bad_tile"),
    ("/slides/a/slide_files/1e3/0_0.jpeg", 400, "bad_tile"),
    ("/slides/a/view/slide/x/0/0.jpeg", 400, "bad_tile"),
    ("/slides/a/view/slide/99/0/0.jpeg", 404, "not_found"),
    ("/slides/a/view/slide/12/0/0.png", 404, "not_found"),
    ("/slides/.hidden/slide.dzi", 404, "not_found"),
])
def test_bad_addresses_are_problems(client, url, status, code):
    r = client.get(url)
    assert r.status_code == status, (url, r.text)
    assert r.headers["content-type"] == "application/problem+json" and r.json()["code"] == code


def test_verdict_round_trip(client, viewer_result):
    assert client.get("/slides/a/review").json() == {"verdict": None}
    r = client.put("/slides/a/review", json={"verdict": "reject", "note": "stain artefact", "reviewer": "Dr C"})
    assert r.status_code == 200 and r.json()["verdict"] == "reject" and r.json()["stale"] is False
    assert client.get("/slides/a/review").json()["note"] == "stain artefact"
    bad = client.put("/slides/a/review", json={"verdict": "perhaps"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_review"
    assert client.put("/slides/zz/review", json={"verdict": "accept"}).status_code == 404
    assert "Reject" in client.get("/").text
    os.remove(viewer_result["out"] / "a" / "review.json")


def test_access_rules_are_serves(viewer_result):
    c, library = client_for(viewer_result["out"])
    assert c.get("/", headers={"Host": "evil.example"}).json()["code"] == "forbidden_host"
    assert c.get("/", headers={"Origin": "http://evil.example"}).json()["code"] == "forbidden_origin"
    library.close()
    c, library = client_for(viewer_result["out"], token=TOKEN)
    assert c.get("/slides/a/slide.dzi").status_code == 401
    assert c.get("/slides/a/slide.dzi", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    library.close()


@pytest.mark.timeout(60)
def test_links_out_are_refused(viewer_result, tmp_path):
    """A result folder planted as a link, result files planted as a link or a FIFO, and a slide
    replaced by a link are not followed."""
    out = tmp_path / "out"
    shutil.copytree(viewer_result["out"] / "a", out / "a")
    os.symlink(viewer_result["out"] / "a", out / "linked")
    elsewhere = tmp_path / "elsewhere.tiff"
    shutil.copy(viewer_result["path"], elsewhere)
    os.remove(out / "a" / "mask.png")
    os.mkfifo(out / "a" / "mask.png")  # never opened as a file: no hang
    os.remove(out / "a" / "probability.tif")
    os.symlink(result_tif := viewer_result["out"] / "a" / "probability.tif", out / "a" / "probability.tif")
    assert result_tif.exists()
    c, library = client_for(out)
    assert c.get("/slides/a/mask_files/12/0_0.png").status_code == 404
    assert c.get("/slides/a/probability_files/12/0_0.png").status_code == 404
    assert c.get("/slides/a/slide_files/12/0_0.jpeg").status_code == 200
    assert c.get("/slides/linked/slide.dzi").status_code == 404
    assert "linked" not in c.get("/").text
    library.close()
    moved = viewer_result["root"] / "slides" / "a.tiff"
    saved = viewer_result["root"] / "slides" / "a.saved"
    os.rename(moved, saved)
    try:
        os.symlink(elsewhere, moved)
        c, library = client_for(out)
        r = c.get("/slides/a/slide.dzi")
        assert r.status_code == 404 and "not at the path its result recorded" in r.json()["detail"]
        library.close()
    finally:
        os.remove(moved)
        os.rename(saved, moved)


def test_a_new_result_is_shown_not_the_cached_one(viewer_result, tmp_path):
    """A result replaced while the viewer runs (serve writes results as it goes) is read anew."""
    out = tmp_path / "out"
    shutil.copytree(viewer_result["out"] / "a", out / "a")
    c, library = client_for(out)
    sx, sy, sw, sh = viewer_result["square_level0"]
    dz = DeepZoom(*viewer_result["size_level0"])
    top = dz.level_count - 1
    url = f"/slides/a/mask_files/{top}/{(sx + sw // 2) // 254}_{(sy + sh // 2) // 254}.png"

    def alpha() -> int:
        return int(cv2.imdecode(np.frombuffer(c.get(url).content, np.uint8), cv2.IMREAD_UNCHANGED)[..., 3].max())

    assert alpha() > 0
    mask = cv2.imread(str(out / "a" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(out / "a" / "mask.png"), np.zeros_like(mask))
    summary = (out / "a" / "summary.json").read_text()
    (out / "a" / "summary.json").unlink()
    (out / "a" / "summary.json").write_text(summary.replace('"created"', '"created_again": 1, "created"', 1))
    assert alpha() == 0
    library.close()


def test_the_cohort_report_through_the_viewer(viewer_result, tmp_path):
    """`/report.html` is the cohort report (its rows then lead to the viewer), with its thumbnails;
    nothing else of the results folder is served, and nothing through a link."""
    from tseg.runtime.cohort.report import write_report

    out = tmp_path / "out"
    shutil.copytree(viewer_result["out"] / "a", out / "a")
    c, library = client_for(out)
    missing = c.get("/report.html")
    assert missing.status_code == 404 and "tseg-rt report" in missing.json()["detail"]
    write_report(out)
    page = c.get("/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '"slides/"' in page.text  # the rows' links, when served over HTTP
    thumb = c.get("/.tseg-report/thumbs/a.jpg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    for bad in ("/.tseg-report/thumbs/..%2F..%2Fa%2Fsummary.json", "/.tseg-report/failed/x.json",
                "/.tseg-report/thumbs/.a.jpg"):
        assert c.get(bad).status_code == 404, bad
    os.symlink(viewer_result["out"] / "a" / "summary.json", out / "report.html.tmp")
    os.replace(out / "report.html.tmp", out / "report.html")  # a link planted as the report
    assert c.get("/report.html").status_code == 404
    library.close()
