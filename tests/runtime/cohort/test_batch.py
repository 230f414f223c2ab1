"""Batches that resume and lose nothing: resume, locks, kills, corrupt slides, full disks."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_colour_model, make_square_slide
from tseg.runtime.outputs import files as outputs
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.cohort.locks import SlideLock
from tseg.runtime.cohort.slide_lists import find_slides
from tseg.runtime.cohort.identity import result_stem
from tseg.runtime.errors import NoSlidesFoundError, OutputError
from tseg.runtime.outputs.files import OUTPUT_FILES
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.cohort.identity import RESULT_MARKER
from tseg.runtime.execution.segmenter import Segmenter


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("m") / "colour.onnx")


@pytest.fixture()
def slides(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    make_square_slide(d / "a.tiff")
    (d / "sub").mkdir()
    make_square_slide(d / "sub" / "b.tif", square_um=(200, 200, 300, 300), seed=2)
    (d / "notes.txt").write_text("not a slide")
    (d / "broken.svs").write_bytes(b"\x00" * 1001)
    return d


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != SUMMARY}


def test_find_slides(slides, tmp_path):
    found = find_slides([slides])
    assert [p.name for p in found] == ["a.tiff", "broken.svs", "b.tif"]
    assert find_slides([slides / "notes.txt"]) == [slides / "notes.txt"]  # explicit files are taken
    with pytest.raises(NoSlidesFoundError):
        find_slides([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])
    with pytest.raises(NoSlidesFoundError, match="no such file"):
        find_slides([tmp_path / "nowhere"])
    # Results inside the input folder are not slides to process.
    (slides / "results" / "a").mkdir(parents=True)
    (slides / "results" / "a" / "probability.tif").write_bytes(b"x")
    assert all("results" not in str(p) for p in find_slides([slides], exclude=slides / "results"))


def test_result_folder_names_are_the_stems():
    assert [result_stem(p) for p in (Path("x/a.svs"), Path("y/a.svs"), Path("z/b.ome.tiff"))] == ["a", "a", "b"]


@pytest.mark.slow
def test_batch_resume_and_overwrite(slides, tmp_path, model):
    out = tmp_path / "out"
    seg = Segmenter(model)
    found = find_slides([slides])
    first = run_batch(found, out, seg)
    assert [o.status for o in first] == ["done", "failed", "done"]
    assert "broken.svs" in first[1].error
    assert sorted(p.name for p in (out / "a").iterdir()) == sorted(OUTPUT_FILES + (RESULT_MARKER,))
    summary = json.loads((out / "a" / SUMMARY).read_text())
    assert summary["areas"]["tumour_area_mm2"] == pytest.approx(0.2)
    assert summary["slide"]["mpp_level0"] == [0.5, 0.5] and "versions" in summary
    assert summary["model"]["contract"]["tile_size"] == 256
    before = (out / "a" / SUMMARY).stat().st_mtime_ns
    second = run_batch(found, out, seg)
    assert [o.status for o in second] == ["skipped", "failed", "skipped"]
    assert (out / "a" / SUMMARY).stat().st_mtime_ns == before
    third = run_batch(found[:1], out, seg, overwrite=True)
    assert third[0].status == "done" and (out / "a" / SUMMARY).stat().st_mtime_ns != before
    assert not [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.suffix == ".lock"]


def test_lock_keeps_a_second_process_off_the_slide(slides, tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    lock = SlideLock(out / ".a.lock", {"slide": str((slides / "a.tiff").resolve())})
    try:
        outcome = run_batch([slides / "a.tiff"], out, Segmenter(model), wait_for_locks=False)[0]
    finally:
        lock.release()
    assert outcome.status == "locked" and not (out / "a").exists()
    assert str(os.getpid()) in outcome.detail
    assert run_batch([slides / "a.tiff"], out, Segmenter(model))[0].status == "done"


def test_stale_temporary_folder_from_a_killed_run_is_cleaned(slides, tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.tmp-99999-deadbeef"
    stale.mkdir()
    (stale / "probability.png").write_bytes(b"half")
    outcome = run_batch([slides / "a.tiff"], out, Segmenter(model))[0]
    assert outcome.status == "done" and not stale.exists()


def test_disk_full_while_writing_leaves_nothing_half_written(slides, tmp_path, model, monkeypatch):
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp") and "summary.json" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(outputs, "open", full_disk_open, raising=False)
    out = tmp_path / "out"
    outcome = run_batch([slides / "a.tiff"], out, Segmenter(model))[0]
    assert outcome.status == "failed" and "disk is full" in outcome.error and "summary.json" in outcome.error
    assert not (out / "a").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_output_root_not_writable(tmp_path, slides, model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        run_batch([slides / "a.tiff"], blocker / "out", Segmenter(model))


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_slide_then_rerun_is_byte_identical(tmp_path, model):
    big = make_square_slide(tmp_path / "in" / "big.tiff" if (tmp_path / "in").mkdir() is None else None,
                            width_um=6000, height_um=4000, tissue_um=(100, 100, 5800, 3800),
                            square_um=(1000, 1000, 1500, 1000))["path"]
    reference = tmp_path / "reference"
    assert _cli("run", big, "--engine", model, "--out", reference, "--no-progress").returncode == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "run", str(big), "--engine", str(model),
                             "--out", str(out), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / ".big.lock").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # well inside the tile loop (the slide takes several seconds)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "big" / SUMMARY).exists(), "a killed run must not leave a finished-looking folder"
    assert not (out / "big").exists()
    rerun = _cli("run", big, "--engine", model, "--out", out, "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert contents(out / "big") == contents(reference / "big")
    a = json.loads((out / "big" / SUMMARY).read_text())
    b = json.loads((reference / "big" / SUMMARY).read_text())
    assert a["areas"] == b["areas"] and a["tiles"]["tiles_run"] == b["tiles"]["tiles_run"]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_two_workers(slides, tmp_path, model):
    out = tmp_path / "out"
    found = [slides / "a.tiff", slides / "sub" / "b.tif"]
    outcomes = run_batch(found, out, None, workers=2, engine=str(model), providers="cpu")
    assert [o.status for o in outcomes] == ["done", "done"]
    run_batch(found, tmp_path / "single", Segmenter(model))
    for name in ("a", "b"):
        assert contents(out / name) == contents(tmp_path / "single" / name)


def test_output_root_that_is_a_file_is_called_a_file(tmp_path, slides, model):
    """--out naming a file (or a folder under a file) says it is a file, not "File exists"."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "out"):
        with pytest.raises(OutputError) as err:
            run_batch([slides / "a.tiff"], out, Segmenter(model))
        text = str(err.value)
        assert f"{blocker} is a file, not a folder" in text and "--out" in text and "File exists" not in text
    assert blocker.read_text() == "x"


def test_a_long_slides_csv_reports_its_progress(tmp_path):
    """Reading millions of rows takes minutes: progress (rows, share of the file) is reported while
    reading, and once at the end; a short list says nothing."""
    from tseg.runtime.cohort.slides_csv import iter_slides_csv

    table = tmp_path / "slides.csv"
    table.write_text("path,low\n" + "".join(f"s{i % 50}.tiff,{80 + i % 3}\n" for i in range(5000)))
    seen = []
    rows = list(iter_slides_csv(table, progress=seen.append, every_s=0.0))
    assert len(rows) == 5000 and len(seen) >= 3
    assert [p.rows for p in seen] == sorted(p.rows for p in seen) and not any(p.finished for p in seen[:-1])
    assert seen[-1].finished and seen[-1].rows == 5000 and "5,000 rows read, done" in seen[-1].describe()
    middle = seen[len(seen) // 2]
    assert middle.total_bytes == table.stat().st_size and 0 < middle.done_bytes <= middle.total_bytes
    assert "rows read (" in middle.describe() and "%)" in middle.describe()
    quiet = []
    assert len(list(iter_slides_csv(table, progress=quiet.append))) == 5000 and quiet == []  # under 5 s: nothing


def test_one_file_listed_under_several_names_is_one_slide_with_one_name(tmp_path, model):
    """A slide, a symbolic link to it and a hard link to it in one folder are one file: one run,
    one result, one cohort.csv row, and its name does not depend on the order of the inputs (the
    file's own name when it is listed; otherwise the first name in sorted order)."""
    from tseg.runtime.cohort.report import write_report

    folder = tmp_path / "slides"
    folder.mkdir()
    make_square_slide(folder / "b.tiff")
    (folder / "a_link.tiff").symlink_to("b.tiff")
    os.link(folder / "b.tiff", folder / "c_hard.tiff")
    orders = ([folder], [folder / "b.tiff", folder / "a_link.tiff"], [folder / "a_link.tiff", folder / "b.tiff"])
    assert [find_slides(i) for i in orders] == [[folder / "b.tiff"]] * 3
    assert find_slides([folder / "a_link.tiff", folder / "c_hard.tiff"]) == [folder / "c_hard.tiff"]  # not a link
    out = tmp_path / "out"
    outcomes = run_batch(find_slides([folder]), out, Segmenter(model))
    assert [(o.status, o.name) for o in outcomes] == [("done", "b")]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["b"]
    made = write_report(out, thumbnails=False)
    assert [r["name"] for r in made.rows] == ["b"]
