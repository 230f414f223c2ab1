"""The cohort report: cohort.csv and report.html from a results folder of real runs, the page parsed,
and loaded and used in a real headless browser where one is installed."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser import Browser, chromium_path
from dicomwsi import square_slide_image, write_dicom_wsi
from helpers import make_colour_model, make_square_slide
from requirements import require
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.cohort.report import COHORT_CSV, COLUMNS, REPORT_DIR, REPORT_HTML, THUMBNAIL_PX, write_report
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.pyramid_tiff import pyramid_from_array, write_pyramid

COPIES = 120  # more rows than two pages of 50


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A results folder made by real runs: ordinary slides, a slide without tissue, one that is all
    tumour, one read at an overridden resolution, a DICOM series whose colours were corrected, a
    broken file, and copies of one result standing for a larger cohort."""
    root = tmp_path_factory.mktemp("cohort")
    slides = root / "in"
    slides.mkdir()
    model = make_colour_model(root / "colour.onnx")
    make_square_slide(slides / "a.tiff")
    make_square_slide(slides / "b.tiff", square_um=(200, 200, 300, 300), seed=2)
    make_square_slide(slides / "full.tiff", square_um=(150, 100, 1300, 1000), seed=3)
    make_square_slide(slides / "over.tiff", seed=4)
    write_pyramid(slides / "blank.tiff", pyramid_from_array(np.full((2400, 3200, 3), 244, np.uint8), min_size=256,
                                                            factor=4), 0.5)
    write_dicom_wsi(slides / "dicom-mislabelled", square_slide_image(), 0.5, "mislabelled")
    (slides / "broken.svs").write_bytes(b"\x00" * 1001)
    out = root / "results"
    found = [slides / n for n in ("a.tiff", "b.tiff", "full.tiff", "over.tiff", "blank.tiff", "broken.svs")]
    found.append(slides / "dicom-mislabelled")
    outcomes = run_batch(found, out, Segmenter(model), slide_settings={str(slides / "over.tiff"): {"mpp": 0.5}})
    statuses = {Path(o.slide).name: o.status for o in outcomes}
    assert statuses["broken.svs"] == "failed" and sum(s == "done" for s in statuses.values()) == 6, statuses
    base = json.loads((out / "a" / SUMMARY).read_text())
    for i in range(COPIES):  # the same result under other names, with other areas
        folder = out / f"copy-{i:03d}"
        folder.mkdir()
        for name in (".tseg-rt-result", "overlay.png", "probability.png"):
            shutil.copy(out / "a" / name, folder / name)
        summary = json.loads(json.dumps(base))
        summary["slide"]["path"] = str(slides / f"copy-{i:03d}.tiff")
        summary["areas"]["tumour_area_mm2"] = round(0.01 * (i + 1), 6)
        summary["areas"]["tumour_fraction_of_tissue"] = round(0.01 * (i + 1) / base["areas"]["tissue_area_mm2"], 6)
        (folder / SUMMARY).write_text(json.dumps(summary))
    report = write_report(out)
    return {"out": out, "report": report, "slides": slides, "model": model}


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        return {r["name"]: r for r in reader}


def test_cohort_csv_has_one_row_per_slide_with_its_numbers(cohort):
    out = cohort["out"]
    rows = read_csv(out / COHORT_CSV)
    assert len(rows) == 7 + COPIES
    a = json.loads((out / "a" / SUMMARY).read_text())
    row = rows["a"]
    assert row["status"] == "done" and row["failure_reason"] == "" and row["review"] == ""
    assert float(row["tumour_area_mm2"]) == a["areas"]["tumour_area_mm2"] == pytest.approx(0.2)
    assert float(row["tissue_area_mm2"]) == a["areas"]["tissue_area_mm2"]
    assert float(row["tumour_fraction"]) == a["areas"]["tumour_fraction_of_tissue"]
    assert int(row["regions"]) == 1 and int(row["tiles_run"]) == a["tiles"]["tiles_run"]
    assert int(row["tiles_skipped_background"]) == a["tiles"]["tiles_skipped_background"]
    for stage in ("open_s", "overview_s", "background_s", "read_s", "infer_s", "merge_s", "postprocess_s", "total_s"):
        assert float(row[stage]) == a["timings_s"][stage]
    assert row["model_sha256"] == a["model"]["backend"]["sha256"] and row["backend"] == "onnxruntime"
    assert (row["low"], row["high"], row["prune"]) == ("85", "229", "true")
    assert row["slide"] == str((cohort["slides"] / "a.tiff").resolve()) and row["folder"] == "a"
    broken = rows["broken"]
    assert broken["status"] == "failed" and "broken.svs" in broken["failure_reason"]
    assert "not a slide format" in broken["failure_reason"] and broken["tumour_area_mm2"] == ""


def test_slides_to_review_first(cohort):
    rows = read_csv(cohort["out"] / COHORT_CSV)
    assert rows["blank"]["review"] == "no tissue found" and float(rows["blank"]["tissue_area_mm2"]) == 0
    assert rows["full"]["review"] == "tumour fraction near 1" and float(rows["full"]["tumour_fraction"]) > 0.99
    assert rows["over"]["review"] == "resolution overridden" and rows["over"]["mpp_source"] == "override"
    assert "colours corrected" in rows["dicom-mislabelled"]["review"]
    assert rows["dicom-mislabelled"]["colour_correction"]
    assert rows["b"]["review"] == "" and rows["copy-000"]["review"] == "tumour fraction near 0"  # 0.01 / 1.31
    totals = cohort["report"].totals
    assert totals["slides"] == 7 + COPIES and totals["failed"] == 1 and totals["done"] == 6 + COPIES
    assert totals["review"] == sum(1 for r in rows.values() if r["review"])


def test_a_failure_is_forgotten_once_the_slide_is_finished(tmp_path, cohort):
    slide = tmp_path / "s.tiff"
    slide.write_bytes(b"not yet copied")
    out = tmp_path / "out"
    seg = Segmenter(cohort["model"])
    assert run_batch([slide], out, seg)[0].status == "failed"
    assert len(list((out / REPORT_DIR / "failed").glob("*.json"))) == 1
    assert read_csv(write_report(out).csv)["s"]["status"] == "failed"
    make_square_slide(slide)  # the copy finished
    assert run_batch([slide], out, seg)[0].status == "done"
    assert not list((out / REPORT_DIR / "failed").glob("*.json"))
    assert read_csv(write_report(out).csv)["s"]["status"] == "done"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csp = ""
        self.data = ""
        self._in_data = False
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "srcset", "poster") and v]
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = a.get("content", "")
        if tag == "script":
            self.scripts += 1
            self._in_data = a.get("id") == "tseg-data"
            assert "src" not in a, "scripts must be inline"
        if tag == "link":
            raise AssertionError(f"no linked resources: {a}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self.data += data


def test_the_page_is_self_contained_and_holds_every_row(cohort):
    out = cohort["out"]
    text = (out / REPORT_HTML).read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert "default-src 'none'" in page.csp and "connect-src" not in page.csp
    for url in page.urls:  # relative links only: slide folders, cohort.csv, fragments
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I) and not url.startswith("//"), url
    data = json.loads(page.data)
    assert len(data["rows"]) == 7 + COPIES
    names = [r[data["columns"].index("name")] for r in data["rows"]]
    assert "broken" in names and "copy-119" in names
    thumbs = [r[data["columns"].index("thumb")] for r in data["rows"] if r[data["columns"].index("thumb")]]
    assert len(thumbs) == 6 + COPIES
    for rel in thumbs[:3]:  # small versions of the overlay picture, legend and all
        image = cv2.imread(str(out / rel))
        assert image is not None and max(image.shape[:2]) <= THUMBNAIL_PX
        overlay = cv2.imread(str(out / Path(rel).stem / "overlay.png"))
        small = cv2.resize(overlay, image.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert abs(overlay.shape[1] / overlay.shape[0] - image.shape[1] / image.shape[0]) < 0.02
        assert np.abs(small.astype(int) - image.astype(int)).mean() < 4, rel  # JPEG's loss only
    assert len(text.encode()) / len(data["rows"]) < 2000  # small per slide: 10,000 slides stay a few MB
    # The failed slide and the slides to review are listed above the table, with their reasons.
    assert "Failed slides (1)" in text and "not a slide format" in text
    assert "Review first (" in text and "no tissue found" in text


@pytest.mark.slow
def test_report_command(cohort, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "report", str(cohort["out"])],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr  # a slide failed: a dependent job can tell
    assert str(cohort["out"] / REPORT_HTML) in r.stdout and f"{7 + COPIES} slide(s)" in r.stdout
    assert "failed: " in r.stderr and "broken.svs" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "report", str(tmp_path / "nowhere")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no such results folder" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    require("browser", "no headless browser here (chromium or google-chrome; Debian: apt-get install chromium); "
                       "the page is checked by parsing it instead" if exe is None else None)
    with Browser(exe) as b:
        yield b


ROWS = "document.querySelectorAll('#rows tr')"


def shown(b: Browser) -> list[str]:
    return b.evaluate(f"Array.from({ROWS}).map(r => r.dataset.name)")


@pytest.mark.slow
def test_the_page_in_a_real_browser(cohort, browser):
    out = cohort["out"]
    url = (out / REPORT_HTML).as_uri()
    b = browser
    b.open(url, "document.body.dataset.ready === '1'")
    total = 7 + COPIES
    assert b.evaluate(f"{ROWS}.length") == 50  # paged: one page of rows in the document
    assert b.evaluate("document.getElementById('page').textContent") == f"page 1 of {-(-total // 50)}"
    assert shown(b)[:2] == ["a", "b"]  # sorted by name
    # The table is filled: every row of the page shows its slide's status and tumour area from cohort.csv.
    table = read_csv(out / COHORT_CSV)
    columns = b.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('th[data-key]'))"
                         ".map(th => [th.dataset.key, th.cellIndex]))")
    cells = b.evaluate(f"Array.from({ROWS}).map(r => [r.dataset.name, r.cells[{columns['status']}].textContent, "
                       f"r.cells[{columns['tumour_area_mm2']}].textContent])")
    assert len(cells) == 50
    for name, status, area in cells:
        row = table[name]
        assert status == row["status"] and area == (f"{float(row['tumour_area_mm2']):.2f}" if row["tumour_area_mm2"]
                                                    else ""), (name, status, area)
    # Every thumbnail of the page loads (relative files, lazily: each when scrolled into view) and is small.
    imgs = "Array.from(document.querySelectorAll('#rows img'))"
    count = b.evaluate(f"{imgs}.length")
    assert count == sum(1 for n in shown(b) if table[n]["status"] == "done")  # every finished slide has one
    b.evaluate(f"""(async () => {{ for (const i of {imgs}) {{ i.scrollIntoView();
                   await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0))); }} }})()""")
    b.wait_for(f"{imgs}.every(i => i.complete)")
    sizes = b.evaluate(f"{imgs}.map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == count and all(0 < w and 0 < h and max(w, h) <= THUMBNAIL_PX for w, h in sizes), sizes
    b.evaluate("window.scrollTo(0, 0)")
    # Sort by tumour fraction: largest first, then smallest first.
    b.evaluate("document.querySelector('th[data-key=tumour_fraction] button').click()")
    fractions = json.loads((out / "full" / SUMMARY).read_text())["areas"]["tumour_fraction_of_tissue"]
    assert shown(b)[0] == "full" and fractions > 0.99
    assert "sort=tumour_fraction" in b.evaluate("location.hash") and "dir=desc" in b.evaluate("location.hash")
    b.evaluate("document.querySelector('th[data-key=tumour_fraction] button').click()")
    table = read_csv(out / COHORT_CSV)
    smallest = min((float(r["tumour_fraction"]), n) for n, r in table.items() if r["tumour_fraction"])[1]
    assert shown(b)[0] == smallest  # slides without a fraction (no tissue, failed) come last either way
    b.evaluate("document.getElementById('last').click()")
    assert shown(b)[-1] in ("blank", "broken")
    # Filter by text, then by status.
    b.evaluate("const q = document.getElementById('q'); q.value = 'broken'; q.dispatchEvent(new Event('input'))")
    b.wait_for(f"{ROWS}.length === 1")
    assert shown(b) == ["broken"] and b.evaluate(f"{ROWS}[0].className") == "failed"
    assert "not a slide format" in b.evaluate(f"{ROWS}[0].textContent")
    b.evaluate("const q2 = document.getElementById('q'); q2.value = ''; q2.dispatchEvent(new Event('input'))")
    b.wait_for(f"{ROWS}.length === 50")
    b.evaluate("const s = document.getElementById('status'); s.value = 'review'; s.dispatchEvent(new Event('change'))")
    flagged = sum(1 for r in read_csv(out / COHORT_CSV).values() if r["review"])
    assert b.evaluate(f"{ROWS}.length") == min(50, flagged)
    assert "status=review" in b.evaluate("location.hash")
    # Pages: the last page holds the rest.
    b.open(url + "#size=25&page=2", "document.body.dataset.ready === '1'")
    b.evaluate("document.getElementById('last').click()")
    assert b.evaluate(f"{ROWS}.length") == total - 25 * (-(-total // 25) - 1)
    # A view opened from its address: the failures.
    b.open(url + "#status=failed", "document.body.dataset.ready === '1'")
    assert shown(b) == ["broken"]
    # The page asked for nothing beyond its own folder, and reported no error on any of these loads.
    for request in b.requests():
        assert request.startswith(("file://", "data:", "about:")), request
    assert b.console_errors() == []


@pytest.mark.slow
def test_the_browser_would_see_errors(browser, tmp_path):
    """The check above can fail: a page with an exception, a console error and a missing image."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><img src='missing.jpg'><script>console.error('boom'); undefined_name();"
                    "</script>", encoding="utf-8")
    browser.events.clear()
    browser.open(page.as_uri())
    browser.wait_for("document.images[0].complete")
    errors = " | ".join(browser.console_errors())
    assert "boom" in errors and "undefined_name" in errors and "missing.jpg" in errors, errors
    browser.events.clear()


def test_names_with_controls_and_bidi_overrides_are_shown_escaped_in_the_page():
    """Issue 30, item 12: a slide named with U+202E, ESC or CR is shown escaped in report.html (its
    table data and its failure list), as the logs show it; never raw."""
    from tseg.runtime.cohort.report import cohort_totals
    from tseg.runtime.cohort.report_page import render_page

    name = "evil\u202egpj.\x1b[2J\rx"
    rows = [{"name": name, "slide": f"/in/{name}.svs", "status": "failed", "review": "", "folder": "",
             "failure_reason": f"/in/{name}.svs: unsupported", "warnings": ""}]
    page = render_page(rows, cohort_totals(rows), {}, "t", "now", 0.1)
    assert "\u202e" not in page and "\x1b" not in page and "\r" not in page
    assert "evil\\u202egpj.\\x1b[2J\\rx" in page
