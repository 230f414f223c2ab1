"""CSV cells that spreadsheets do not run (OWASP), through the project's one CSV writer."""

from __future__ import annotations

import csv

import pytest

from tseg.runtime.util.atomic import write_csv
from tseg.runtime.util.spreadsheet import restore_cell, safe_cell


@pytest.mark.parametrize("text, written", [
    ('=HYPERLINK("x","y")', '\'=HYPERLINK("x","y")'), ("+cmd", "'+cmd"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("'=x", "''=x"), ("''+x", "'''+x"),
    ("-2.5", "-2.5"), ("+1e-3", "+1e-3"), ("-.5", "-.5"), ("-inf", "'-inf"), ("-", "'-"),
    ("plain", "plain"), ("'plain", "'plain"), ("", ""), ("a=b", "a=b"),
])
def test_formula_starts_are_neutralised_numbers_kept_and_reversible(text, written):
    assert safe_cell(text) == written
    assert restore_cell(written) == text


def test_python_values_pass_unchanged():
    for value in (None, True, 0, -3, -2.5, float("nan")):
        assert safe_cell(value) is value


def test_write_csv_neutralises_every_cell_and_header_and_survives_undecodable_names(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"name": "=1+1", "n": -4, "x": -0.5, "path": "/s/\udcff.tif"},
                                          {"name": "ok", "n": None}], ["name", "n", "x", "path"])
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["name", "n", "x", "path"], ["'=1+1", "-4", "-0.5", "/s/\\udcff.tif"], ["ok", "", "", ""]]
