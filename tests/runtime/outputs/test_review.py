"""The reviewer's verdict kept with a result (``review.json``): atomic, tied to the result it was
given on (stale on a newer one), refused when not a verdict, shown in ``cohort.csv``."""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone

import pytest

from tseg.runtime.cli.report import report_counts
from tseg.runtime.cohort.report import COHORT_CSV, write_report
from tseg.runtime.errors import InvalidArgumentError, OutputError
from tseg.runtime.outputs.review import REVIEW, read_review, review_columns, write_review


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "out"
    folder = out / "a"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"slide": {"path": "/s/a.svs"}, "created": "1"}))
    return out


def test_verdict_is_kept_and_goes_stale_on_a_new_result(results):
    folder = results / "a"
    assert read_review(folder) is None
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    saved = write_review(folder, "needs_correction", "border too wide at the top", "Dr A", now=now)
    assert saved["stale"] is False and saved["time"] == "2026-01-02T03:04:05+00:00"
    assert read_review(folder) == saved
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert review_columns(folder)["verdict"] == "needs_correction"
    (folder / "summary.json").write_text(json.dumps({"slide": {"path": "/s/a.svs"}, "created": "2"}))  # a new run
    assert read_review(folder)["stale"] is True
    assert review_columns(folder)["verdict"] == "needs_correction (stale)"


def test_bad_verdicts_are_refused(results):
    folder = results / "a"
    for verdict, note in (("maybe", ""), (None, ""), ("accept", "x" * 5000), ("accept", 3)):
        with pytest.raises(InvalidArgumentError):
            write_review(folder, verdict, note)
    assert not (folder / REVIEW).exists()
    (folder / REVIEW).write_text("{not json")
    with pytest.raises(OutputError, match="review.json"):
        read_review(folder)
    assert review_columns(folder)["verdict"] == "unreadable"


def test_a_planted_link_is_not_read(results, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"verdict": "accept"}))
    os.symlink(secret, results / "a" / REVIEW)
    with pytest.raises(OutputError):
        read_review(results / "a")
    write_review(results / "a", "reject")  # replaces the link, never writes through it
    assert json.loads(secret.read_text()) == {"verdict": "accept"}
    assert not os.path.islink(results / "a" / REVIEW)


def test_cohort_csv_has_the_verdict(results):
    write_review(results / "a", "accept", "fine", "Dr B")
    made = write_report(results, thumbnails=False)
    with open(made.csv, newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert (row["verdict"], row["verdict_note"], row["reviewer"]) == ("accept", "fine", "Dr B")
    assert made.totals["verdicts"] == 1
    assert report_counts(made.totals).endswith("; 1 with a reviewer's verdict")  # what `tseg-rt report` says
    assert '"verdict"' in made.html.read_text()
    assert (results / COHORT_CSV).exists()


@pytest.mark.timeout(30)
def test_a_fifo_planted_as_the_verdict_does_not_hang(results):
    os.mkfifo(results / "a" / REVIEW)
    with pytest.raises(OutputError):
        read_review(results / "a")
    assert review_columns(results / "a")["verdict"] == "unreadable"
