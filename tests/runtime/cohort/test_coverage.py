"""The report of a given cohort (``tseg-rt report RESULTS --slides ... | --csv ...``): every slide a
row, finished, failed, unreadable, running (a live lock in another process, with its Slurm task)
or not run; moved slides found by content; results of other slides counted, not listed; the exit
status; the shard of each slide that did not finish."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_colour_model, make_square_slide
from requirements import require
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.cohort.slide_lists import collect_slides
from tseg.runtime.cohort.report import COHORT_CSV, REPORT_HTML, exit_status, write_report
from tseg.runtime.cohort.identity import SlideIdentity
from tseg.runtime.cohort.shard import shard_index
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.summary import SUMMARY

HOLD_LOCK = """
import sys
from pathlib import Path
from tseg.runtime.cohort.locks import SlideLock
lock = SlideLock(Path(sys.argv[1]), {"slide": sys.argv[2]})
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder of real runs, and a cohort folder whose slides stand in every state."""
    root = tmp_path_factory.mktemp("coverage")
    slides, old, other = root / "cohort", root / "old", root / "other"
    for d in (slides, old, other):
        d.mkdir()
    make_square_slide(slides / "a.tiff")
    make_square_slide(slides / "b.tiff", square_um=(200, 200, 300, 300), seed=2)
    (slides / "broken.svs").write_bytes(b"\x00" * 1001)
    make_square_slide(old / "m.tiff", seed=5)  # segmented here, then moved into the cohort
    make_square_slide(slides / "u.tiff", seed=6)  # its summary.json is then damaged
    make_square_slide(other / "x.tiff", seed=7)  # a result of a slide outside the cohort
    out = root / "results"
    seg = Segmenter(make_colour_model(root / "colour.onnx"))
    outcomes = run_batch([slides / "a.tiff", slides / "b.tiff", slides / "broken.svs", old / "m.tiff",
                          slides / "u.tiff", other / "x.tiff"], out, seg)
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done", "done", "done"]
    shutil.move(old / "m.tiff", slides / "m.tiff")
    (out / "u" / SUMMARY).write_text("{ not json")
    make_square_slide(slides / "c.tiff", seed=8)  # never run
    make_square_slide(slides / "d.tiff", seed=9)  # being processed by another process (below)
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "80"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".d.lock"), str((slides / "d.tiff").resolve())],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield {"root": root, "slides": slides, "out": out, "holder": holder, "seg": seg}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def cohort_of(*inputs: Path, out: Path) -> list[Path]:
    return collect_slides(list(inputs), [], exclude=out)[0]


def by_name(rows):
    return {r["name"]: r for r in rows}


@pytest.mark.slow
def test_every_slide_of_the_cohort_is_a_row_in_its_state(results):
    out, slides = results["out"], results["slides"]
    made = write_report(out, cohort=cohort_of(slides, out=out), shards=4)
    rows = by_name(made.rows)
    assert sorted(rows) == ["a", "b", "broken", "c", "d", "m", "u"]  # x is another cohort's
    assert {n: r["status"] for n, r in rows.items()} == {
        "a": "done", "b": "done", "broken": "failed", "c": "not run", "d": "running", "m": "done", "u": "unreadable"}
    c = slides / "c.tiff"
    assert rows["c"]["slide"] == str(c.resolve()) and rows["c"]["folder"] == ""
    assert rows["c"]["failure_reason"] == f"no result in {out}; shard {shard_index(c, 4)} of 4"
    assert (f"being processed by tseg-rt process {results['holder'].pid} on " in rows["d"]["failure_reason"]
            and "(slurm 77_3 (job 80))" in rows["d"]["failure_reason"])
    assert rows["m"]["folder"] == "m" and rows["m"]["failure_reason"] == ""  # found by content after the move
    assert "not valid JSON" in rows["u"]["failure_reason"]
    assert "not a slide format" in rows["broken"]["failure_reason"] and "shard " in rows["broken"]["failure_reason"]
    assert rows["a"]["worker"].endswith(f"pid {os.getpid()}")  # made in this process, outside Slurm
    t = made.totals
    assert (t["slides"], t["done"], t["failed"], t["unreadable"], t["not_run"], t["running"], t["outside"]) == \
        (7, 3, 1, 1, 1, 1, 1)
    assert exit_status(t) == 1
    with open(out / COHORT_CSV, newline="", encoding="utf-8") as fh:
        assert sorted(r["status"] for r in csv.DictReader(fh)) == sorted(r["status"] for r in made.rows)
    page = (out / REPORT_HTML).read_text()
    assert "Not finished (2): not run, or still running" in page and '<option value="not run">' in page
    assert "1 result(s) in this folder are for slides outside the cohort, not listed" in page
    assert 'data-total="not run"><b>1</b>' in page and 'data-total="running"><b>1</b>' in page


@pytest.mark.slow
def test_exit_status_says_whether_every_slide_finished(results):
    out, slides = results["out"], results["slides"]
    assert exit_status(write_report(out, cohort=cohort_of(slides / "a.tiff", slides / "c.tiff", out=out)).totals) == 3
    assert exit_status(write_report(out, cohort=cohort_of(slides / "d.tiff", out=out)).totals) == 3  # running
    finished = write_report(out, cohort=cohort_of(slides / "a.tiff", slides / "m.tiff", out=out))
    assert exit_status(finished.totals) == 0 and finished.outside == 4  # b, broken, u, x
    folder = write_report(out)  # no cohort: what the folder holds, nothing "not run"
    assert "not run" not in {r["status"] for r in folder.rows} and exit_status(folder.totals) == 1


@pytest.mark.slow
def test_a_slide_not_run_is_named_as_run_would_name_its_folder(results, tmp_path):
    """Another slide called a.tiff: a/ holds the cohort's a.tiff, so run would use a-<hash>/."""
    out = results["out"]
    twin = tmp_path / "a.tiff"
    make_square_slide(twin, seed=11)
    row = write_report(out, cohort=cohort_of(twin, out=out)).rows[0]
    assert (row["status"], row["name"]) == ("not run", SlideIdentity(str(twin.resolve()), "", 0, "a").hashed_name)
    outcome = run_batch([twin], out, results["seg"])[0]
    assert outcome.name == row["name"]  # the folder run then made
    try:
        done = write_report(out, cohort=cohort_of(twin, out=out)).rows[0]
        assert (done["status"], done["folder"]) == ("done", row["name"])
    finally:
        shutil.rmtree(out / outcome.name)


def _report(*args):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_command_with_the_cohort(results, tmp_path):
    out, slides = results["out"], results["slides"]
    r = _report(out, "--slides", slides, "--shards", 4, "--no-thumbnails")
    assert r.returncode == 1, r.stderr
    assert "7 slide(s): 3 finished, 2 failed, 1 not run, 1 running, " in r.stdout
    assert "(1 other result(s) in the folder, not in this cohort, not listed)" in r.stdout
    assert f"not run: {(slides / 'c.tiff').resolve()}: no result in {out}; shard" in r.stderr
    assert f"running: {(slides / 'd.tiff').resolve()}: being processed by tseg-rt process" in r.stderr
    shards = sorted({shard_index(slides / n, 4) for n in ("broken.svs", "c.tiff", "d.tiff", "u.tiff")})
    assert f"to run them again: sbatch --array={','.join(map(str, shards))} with SHARDS=4" in r.stderr
    listing = tmp_path / "cohort.csv"
    relative = os.path.relpath(slides / "m.tiff", tmp_path)  # taken from the CSV's folder, as run takes it
    listing.write_text(f"path,low\n{slides / 'a.tiff'},\n{relative},60\n")
    r = _report(out, "--csv", listing, "--no-thumbnails")
    assert "2 slide(s): 2 finished, 0 failed, 0 not run, 0 running" in r.stdout and r.returncode == 0, r.stderr
    r = _report(out, "--slides", slides / "a.tiff", "--slides", slides / "c.tiff", "--no-thumbnails")
    assert r.returncode == 3 and "2 slide(s): 1 finished, 0 failed, 1 not run, 0 running" in r.stdout, r.stderr


@pytest.mark.slow
def test_report_command_refuses_what_it_cannot_do(results, tmp_path):
    r = _report(results["out"], "--shards", 4)
    assert r.returncode == 2 and "--shards needs the cohort" in r.stderr
    r = _report(results["out"], "--slides", tmp_path / "nowhere")
    assert r.returncode == 2 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    r = _report(tmp_path / "nothing", "--slides", results["slides"])
    assert r.returncode == 2 and "no such results folder" in r.stderr


@pytest.mark.slow
def test_the_page_filters_the_slides_that_did_not_finish_in_a_real_browser(results):
    from browser import Browser, chromium_path

    exe = chromium_path()
    require("browser", "no headless browser here (Debian: apt-get install chromium); the page is parsed above"
            if exe is None else None)
    out = results["out"]
    write_report(out, cohort=cohort_of(results["slides"], out=out))
    rows = "document.querySelectorAll('#rows tr')"
    with Browser(exe) as b:
        b.open((out / REPORT_HTML).as_uri() + "#status=not%20run", "document.body.dataset.ready === '1'")
        assert b.evaluate(f"Array.from({rows}).map(r => [r.dataset.name, r.className])") == [["c", "not-run"]]
        assert b.evaluate("document.querySelector('#rows td.status-not-run').textContent") == "not run"
        b.evaluate("const s = document.getElementById('status'); s.value = 'running'; "
                   "s.dispatchEvent(new Event('change'))")
        assert b.evaluate(f"Array.from({rows}).map(r => r.dataset.name)") == ["d"]
        assert "status=running" in b.evaluate("location.hash")


def test_the_live_lock_check_never_blocks_on_or_follows_a_planted_file(tmp_path):
    """report --slides asks each unfinished slide's lock whether a live process holds it: a FIFO
    planted at the lock's name must not hang that read-only check, and a link must not be
    followed to a file elsewhere; a real held lock is still seen."""
    import fcntl
    import json
    import os
    import threading

    from tseg.runtime.cohort.locks import live_holder

    fifo = tmp_path / ".a.lock"
    os.mkfifo(fifo)
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    link = tmp_path / ".b.lock"
    link.symlink_to(outside)
    answers: dict[str, object] = {}
    checker = threading.Thread(target=lambda: answers.update(fifo=live_holder(fifo), link=live_holder(link)), daemon=True)
    checker.start()
    checker.join(10)
    assert not checker.is_alive(), "the lock check blocked on a FIFO"
    assert answers == {"fifo": (False, None), "link": (False, None)}
    with outside.open("r") as held:  # the link's target held by someone: still not this lock's holder
        fcntl.flock(held, fcntl.LOCK_EX)
        assert live_holder(link) == (False, None)
    real = tmp_path / ".c.lock"
    real.write_text(json.dumps({"pid": 1, "host": "h"}))
    with real.open("r") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert live_holder(real) == (True, {"pid": 1, "host": "h"})
