"""The command line: exit codes, messages, info and postprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import make_colour_model, make_square_slide, real_slide
from tseg.runtime.outputs.files import GEOJSON, MASK, OVERLAY
from tseg.runtime.outputs.summary import SUMMARY

pytestmark = pytest.mark.slow  # every test here starts a process or a server, or takes seconds


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "in").mkdir()
    make_square_slide(d / "in" / "s.tiff")
    return d, make_colour_model(d / "m.onnx"), make_colour_model(d / "graded.onnx", graded=True)


def test_run_ok_and_failure_exit_codes(setup, tmp_path):
    d, model, _ = setup
    ok = cli("run", d / "in", "--engine", model, "--out", tmp_path / "o", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "s" in ok.stdout and "done" in ok.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.svs").write_text("corrupt")
    mixed = cli("run", d / "in" / "s.tiff", bad / "x.svs", "--engine", model, "--out", tmp_path / "o2", "--no-progress")
    assert mixed.returncode == 1
    assert "x.svs" in mixed.stderr and "1 of 2" in mixed.stderr
    assert (tmp_path / "o2" / "s" / SUMMARY).exists()


def test_setup_errors_exit_2_with_a_message(setup, tmp_path):
    d, model, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("run", empty, "--engine", model, "--out", tmp_path / "o")
    assert r.returncode == 2 and "no slides found" in r.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage")
    r = cli("run", d / "in", "--engine", junk, "--out", tmp_path / "o")
    assert r.returncode == 2 and "junk.onnx" in r.stderr
    r = cli("run", d / "in", "--engine", tmp_path / "missing.onnx", "--out", tmp_path / "o")
    assert r.returncode == 2 and "missing.onnx" in r.stderr
    (tmp_path / "f").write_text("x")
    r = cli("run", d / "in", "--engine", model, "--out", tmp_path / "f" / "o")
    assert r.returncode == 2 and "not writable" in r.stderr
    r = cli("run", d / "in", "--engine", model, "--mpp", "abc")
    assert r.returncode == 2 and "--mpp" in r.stderr


def test_mpp_override_on_the_command_line(tmp_path, shared_data, setup):
    _, model, _ = setup
    slide = real_slide(shared_data, "tcga-cr-7395-01a-01-ts1.svs")
    r = cli("run", slide, "--engine", model, "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 1 and "--mpp" in r.stderr
    r = cli("run", slide, "--engine", model, "--out", tmp_path / "o", "--mpp", "0.25", "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "o" / "tcga-cr-7395-01a-01-ts1" / SUMMARY).read_text())
    assert summary["slide"]["mpp_source"] == "override"


def test_info(setup):
    d, model, _ = setup
    r = cli("info", d / "in" / "s.tiff", "--json")
    data = json.loads(r.stdout)
    assert data["vendor"] == "generic-tiff" and data["mpp"] == [0.5, 0.5]
    assert data["size_mm"] == [1.6, 1.2]
    r = cli("info", model, "--json")
    assert json.loads(r.stdout)["contract"]["tile_size"] == 256
    r = cli("info", d / "nope.svs")
    assert r.returncode == 2 and "nope.svs" in r.stderr


def test_postprocess_equals_a_fresh_run_with_those_thresholds(setup, tmp_path):
    d, _, graded = setup
    default = tmp_path / "default"
    assert cli("run", d / "in", "--engine", graded, "--out", default, "--no-progress").returncode == 0
    before = json.loads((default / "s" / SUMMARY).read_text())
    assert before["areas"]["tumour_area_mm2"] == 0.0  # 255 - red never exceeds 229 here
    r = cli("postprocess", default, "--low", "40", "--high", "100")
    assert r.returncode == 0, r.stderr
    fresh = tmp_path / "fresh"
    assert cli("run", d / "in", "--engine", graded, "--out", fresh, "--low", "40", "--high", "100",
               "--no-progress").returncode == 0
    for name in (MASK, OVERLAY, GEOJSON):
        assert (default / "s" / name).read_bytes() == (fresh / "s" / name).read_bytes(), name
    a = json.loads((default / "s" / SUMMARY).read_text())
    b = json.loads((fresh / "s" / SUMMARY).read_text())
    assert a["areas"] == b["areas"] and a["areas"]["tumour_area_mm2"] > 0.15
    assert a["settings"]["low"] == 40 and a["history"][-1]["postprocess"]["high"] == 100


def test_opt_in_reading_options_on_the_command_line(tmp_path, shared_data, setup):
    # The TCGA slide read as 0.505 µm/px: its level 1 is 1.03 % coarser than 1 µm/px.
    _, model, _ = setup
    slide = real_slide(shared_data, "tcga-cr-7395-01a-01-ts1.svs")
    runs = {"exact": [], "opt-in": ["--level-tolerance", "2", "--dct-scaling"]}
    for name, extra in runs.items():
        r = cli("run", slide, "--engine", model, "--out", tmp_path / name, "--mpp", "0.505", "--no-progress", *extra)
        assert r.returncode == 0, r.stderr
    exact, opt = (json.loads((tmp_path / n / "tcga-cr-7395-01a-01-ts1" / SUMMARY).read_text()) for n in runs)
    assert exact["slide"]["level_read_at_model_mpp"] == 0 and opt["slide"]["level_read_at_model_mpp"] == 1
    assert exact["settings"]["level_tolerance_percent"] == 0 and opt["settings"]["level_tolerance_percent"] == 2
    assert opt["settings"]["dct_scaling"] is True and opt["slide"]["dct_scale_at_model_mpp"] == 1  # JPEG 2000
    assert opt["slide"]["decoder"] == "tifffile"
    r = cli("run", slide, "--engine", model, "--out", tmp_path / "x", "--mpp", "0.505", "--level-tolerance", "-3")
    assert r.returncode == 2
