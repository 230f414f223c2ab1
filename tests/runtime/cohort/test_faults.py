"""Fault injection from the user's side (issue 12): nothing wrong reported as done, nothing
finished confused or lost. Each test drives the command line or the public API with a broken,
odd or concurrent input, and checks what a user would see: the answer, the exit status, one
clear line, and what is left on disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dicomwsi import square_slide_image, write_dicom_wsi
from helpers import make_colour_model, make_square_slide, textured_rgb
from tseg.runtime.cohort.batch import run_batch
from tseg.runtime.errors import ContractError
from tseg.runtime.outputs.files import MASK, PROBABILITY
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.method.postprocess import segment_probability
from tseg.runtime.cohort.identity import RESULT_MARKER
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.wsi.slide import open_slide


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


def one_line_error(r) -> None:
    """No traceback, no Python internals: the user sees short lines."""
    assert "Traceback" not in r.stderr and 'File "' not in r.stderr, r.stderr


def summary(folder: Path) -> dict:
    return json.loads((folder / SUMMARY).read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "fast": make_colour_model(d / "fast.onnx", tile=1024, overlap=64),
        "graded": make_colour_model(d / "graded.onnx", tile=1024, overlap=64, graded=True),
        "slow": make_colour_model(d / "slow.onnx", tile=256, overlap=32),
        "no_contract": make_colour_model(d / "no_contract.onnx", contract=False),
    }


# --- 1. small specimens ----------------------------------------------------------------------


@pytest.mark.parametrize("side", [40, 50, 75, 99])
def test_1_empty_small_maps_are_not_tumour(side):
    """Sides of 40-99 px at 5 µm/px (0.04-0.25 mm²): an empty map must give an empty mask."""
    empty = np.zeros((side, side), np.uint8)
    assert not segment_probability(empty, np.ones((side, side), bool)).any()
    assert not segment_probability(empty).any()


def test_1_white_image_through_segment_image_has_no_tumour(models):
    result = Segmenter(models["fast"]).segment_image(np.full((300, 300, 3), 255, np.uint8))
    assert not result.mask.any() and not result.foreground.any()
    assert result.regions == 0 and result.summary["areas"]["tumour_area_mm2"] == 0.0
    assert result.summary["areas"]["tissue_area_mm2"] == 0.0


def test_1_region_of_interest_keeps_its_glass(tmp_path, models):
    """What embedding software sends: a region at 1 µm/px with glass, tissue and tumour. Its glass
    (an L along the top and left edges, 6,200 px at 5 µm/px) touches the border and is small."""
    info = make_square_slide(tmp_path / "s.tiff")  # tissue from (150, 100) µm, tumour from (600, 400)
    with open_slide(info["path"]) as slide:
        roi = slide.read(1.0, (0, 0, 800, 600))
    result = Segmenter(models["fast"]).segment_image(roi)
    fg, mask = result.foreground, result.mask
    assert fg.shape == (120, 160)
    assert not fg[:15].any() and not fg[:, :25].any(), "the glass must stay background"
    assert fg[25:, 35:].mean() > 0.95
    assert mask[85:, 125:].all() and not mask[:75].any() and not mask[:, :115].any()
    areas = result.summary["areas"]
    assert areas["tumour_area_mm2"] == pytest.approx(0.04, rel=0.05)  # 200 x 200 µm of the square
    assert areas["tissue_area_mm2"] == pytest.approx(0.65 * 0.5, rel=0.05)  # 650 x 500 µm


def test_1_biopsy_fragment_in_a_small_crop(models):
    """A fragment of tissue surrounded by glass, in a crop smaller than 10,000 px at 5 µm/px."""
    crop = np.full((450, 550, 3), 243, np.uint8)
    crop[125:325, 150:400] = textured_rgb(200, 250, seed=3)
    result = Segmenter(models["fast"]).segment_image(crop)
    fg = result.foreground  # 90 x 110 at 5 µm/px
    assert fg[25:65, 30:80].mean() > 0.9
    assert not fg[:15].any() and not fg[80:].any() and not fg[:, :20].any() and not fg[:, 90:].any()


# --- 2. DICOM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-in")
    img = square_slide_image()
    write_dicom_wsi(root / "correct-series", img, 0.5, "ycbcr")
    write_dicom_wsi(root / "mislabelled-series", img, 0.5, "mislabelled")
    return root


@pytest.mark.slow
def test_2_a_dicom_series_folder_is_one_slide_named_after_its_folder(dicom_cases, tmp_path, models):
    out = tmp_path / "out"
    r = cli("run", dicom_cases, "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.is_dir()) == ["correct-series",
                                                                                  "mislabelled-series"]
    s = summary(out / "correct-series")
    assert s["areas"]["tumour_area_mm2"] == pytest.approx(0.2, rel=0.03) and s["slide"]["vendor"] == "dicom"
    # Naming each .dcm file is the same slide once (finished: skipped), not one slide per file.
    files = sorted((dicom_cases / "correct-series").glob("*.dcm"))
    r = cli("run", *files, "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "1 slide(s)" in r.stderr and "skipped" in r.stdout
    assert len([p for p in out.iterdir() if not p.name.startswith(".") and p.is_dir()]) == 2


def test_2_mislabelled_ycbcr_is_corrected_and_reported(dicom_cases, models):
    seg = Segmenter(models["graded"], low=40, high=100)
    good = seg.segment_slide(dicom_cases / "correct-series")
    bad = seg.segment_slide(dicom_cases / "mislabelled-series")
    diff = np.abs(good.probability.astype(int) - bad.probability.astype(int))
    assert diff.max() <= 3, "probabilities must not move (they moved by up to 150 levels uncorrected)"
    assert (good.mask == bad.mask).mean() > 0.999
    assert bad.summary["areas"]["tumour_area_mm2"] == pytest.approx(0.2, rel=0.05)
    assert bad.summary["slide"]["colour_correction"] and not good.summary["slide"]["colour_correction"]
    assert any("colours corrected" in w for w in bad.summary["warnings"]) and not good.summary["warnings"]


@pytest.mark.slow
def test_2_cli_warns_when_colours_were_corrected(dicom_cases, tmp_path, models):
    r = cli("run", dicom_cases / "mislabelled-series", "--engine", models["fast"], "--out", tmp_path / "o",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "colours corrected" in r.stderr and "mislabelled-series" in r.stderr
    r = cli("info", dicom_cases / "mislabelled-series", "--json")
    assert r.returncode == 0 and "YCbCr" in json.loads(r.stdout)["colour_correction"]


# --- 3. models that cannot work --------------------------------------------------------------


def _channels_first_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("tumour_probability", TensorProto.UINT8, ["N", 1, "H", "W"])
    init = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 1), ("a", 1))]
    nodes = [helper.make_node("Slice", ["image", "s", "e", "a"], ["tumour_probability"])]
    model = helper.make_model(helper.make_graph(nodes, "nchw", [x], [y], init),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from tseg.runtime.execution.contract import METADATA_KEY, ModelContract

    helper.set_model_props(model, {METADATA_KEY: ModelContract(tile_size=256, min_overlap=32, divisor=16).to_json()})
    onnx.save(model, path)
    return path


def _fixed_size_model(path: Path, source: Path) -> Path:
    import onnx

    model = onnx.load(source)
    for tensor in list(model.graph.input) + list(model.graph.output):
        dims = tensor.type.tensor_type.shape.dim
        for i in ((1, 2) if tensor.name == "image" else (2, 3)):
            dims[i].ClearField("dim_param")
            dims[i].dim_value = 256
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_3_models_that_cannot_work_are_refused_at_load(tmp_path, models):
    make_square_slide(tmp_path / "in" / "s.tiff" if (tmp_path / "in").mkdir() is None else None)
    cases = {
        "channels-first": (_channels_first_model(tmp_path / "nchw.onnx"), "channels-first"),
        "fixed H/W": (_fixed_size_model(tmp_path / "fixed.onnx", models["slow"]), "fixed size 256 x 256"),
    }
    for label, (model, expected) in cases.items():
        with pytest.raises(ContractError, match=expected):
            Segmenter(model)
        r = cli("run", tmp_path / "in", "--engine", model, "--out", tmp_path / "o", "--no-progress")
        assert r.returncode == 2, (label, r.stderr)
        one_line_error(r)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and model.name in lines[0] and expected in lines[0], (label, r.stderr)
        assert not (tmp_path / "o" / "s").exists()


# --- 4. identity and stable names ------------------------------------------------------------


@pytest.mark.slow
def test_4_resume_never_skips_the_wrong_slide(tmp_path, models):
    parent = tmp_path / "slides"
    make_square_slide(parent / "dirA" / "x.tif" if (parent / "dirA").mkdir(parents=True) is None else None)
    make_square_slide(parent / "dirB" / "x.tif" if (parent / "dirB").mkdir() is None else None,
                      square_um=(200, 200, 300, 300), seed=2)
    out = tmp_path / "out"
    r = cli("run", parent / "dirB" / "x.tif", "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert summary(out / "x")["slide"]["path"] == str((parent / "dirB" / "x.tif").resolve())
    first = (out / "x" / MASK).read_bytes()
    r = cli("run", parent, "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    folders = sorted(p for p in out.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert len(folders) == 2, folders
    by_path = {summary(f)["slide"]["path"]: f for f in folders}
    a, b = by_path[str((parent / "dirA" / "x.tif").resolve())], by_path[str((parent / "dirB" / "x.tif").resolve())]
    assert b.name == "x" and (b / MASK).read_bytes() == first, "dirB's result keeps its folder"
    assert a.name.startswith("x-") and summary(a)["areas"]["tumour_area_mm2"] == pytest.approx(0.2)
    assert summary(b)["areas"]["tumour_area_mm2"] == pytest.approx(0.09)
    # The same run again, in another order of inputs: the same folders, everything skipped.
    r = cli("run", parent / "dirB", parent / "dirA", "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0 and r.stdout.count("│ skipped ") == 2, r.stdout
    # A slide file replaced by another scan under the same path is redone, not skipped.
    make_square_slide(parent / "dirB" / "x.tif", square_um=(300, 300, 600, 500), seed=5)
    r = cli("run", parent / "dirB" / "x.tif", "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0 and "changed" in r.stderr, r.stderr
    assert summary(out / "x")["areas"]["tumour_area_mm2"] == pytest.approx(0.3)


# --- 5. changed settings --------------------------------------------------------------------


@pytest.mark.slow
def test_5_changed_settings_are_applied_and_said(tmp_path, models):
    (tmp_path / "in").mkdir()
    make_square_slide(tmp_path / "in" / "s.tiff")
    out = tmp_path / "out"
    base = ("run", tmp_path / "in", "--out", out, "--no-progress")
    assert cli(*base, "--engine", models["graded"]).returncode == 0
    assert summary(out / "s")["areas"]["tumour_area_mm2"] == 0.0
    # Only thresholds: post-processed again from the saved maps, equal to a fresh run.
    r = cli(*base, "--engine", models["graded"], "--low", "40", "--high", "100")
    assert r.returncode == 0 and "post-processed" in r.stdout and "40/100" in r.stderr, r.stderr
    fresh = tmp_path / "fresh"
    assert cli("run", tmp_path / "in", "--out", fresh, "--no-progress", "--engine", models["graded"],
               "--low", "40", "--high", "100").returncode == 0
    assert (out / "s" / MASK).read_bytes() == (fresh / "s" / MASK).read_bytes()
    assert summary(out / "s")["settings"]["low"] == 40 and summary(out / "s")["areas"]["tumour_area_mm2"] > 0.15
    # Same settings again: skipped.
    r = cli(*base, "--engine", models["graded"], "--low", "40", "--high", "100")
    assert r.returncode == 0 and "skipped" in r.stdout
    # Another model: run again.
    r = cli(*base, "--engine", models["fast"], "--low", "40", "--high", "100")
    assert r.returncode == 0 and "another model" in r.stderr and "done" in r.stdout, r.stderr
    assert summary(out / "s")["model"]["backend"]["path"].endswith("fast.onnx")
    # Another resolution: run again.
    r = cli(*base, "--engine", models["fast"], "--low", "40", "--high", "100", "--mpp", "0.25")
    assert r.returncode == 0 and "done" in r.stdout and "0.25" in r.stderr, r.stderr
    s = summary(out / "s")
    assert s["slide"]["mpp_level0"] == [0.25, 0.25] and s["areas"]["tumour_area_mm2"] == pytest.approx(0.05)
    # An opt-in reading speed-up (issue 13) changes the pixels read: run again, and say why.
    r = cli(*base, "--engine", models["fast"], "--low", "40", "--high", "100", "--mpp", "0.25",
            "--level-tolerance", "2")
    assert r.returncode == 0 and "done" in r.stdout and "--level-tolerance 2" in r.stderr, r.stderr
    assert summary(out / "s")["settings"]["level_tolerance_percent"] == 2.0


# --- 6. old results are not slides -----------------------------------------------------------


@pytest.mark.slow
def test_6_result_folders_are_never_taken_as_slides(tmp_path, models):
    inp = tmp_path / "in"
    inp.mkdir()
    make_square_slide(inp / "s.tiff")
    assert cli("run", inp, "--engine", models["fast"], "--out", inp / "results", "--no-progress").returncode == 0
    assert (inp / "results" / "s" / RESULT_MARKER).is_file()
    r = cli("run", inp, "--engine", models["fast"], "--out", tmp_path / "other", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "1 slide(s)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "other").iterdir() if not p.name.startswith(".")) == \
        ["cohort.csv", "report.html", "s"]  # the result folder and the cohort report


# --- 7. locks -------------------------------------------------------------------------------


@pytest.mark.slow
def test_7_a_lock_that_cannot_be_created_fails_that_slide_alone(tmp_path, models):
    inp = tmp_path / "in"
    inp.mkdir()
    make_square_slide(inp / "a.tiff")
    make_square_slide(inp / "b.tiff", seed=3)
    out = tmp_path / "out"
    (out / ".a.lock").mkdir(parents=True)  # a folder in the way
    r = cli("run", inp, "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 1
    one_line_error(r)
    assert "tseg-rt run" in r.stdout and "b" in r.stdout  # the table came
    fail = [ln for ln in r.stderr.splitlines() if ln.startswith("failed")]
    assert len(fail) == 1 and ".a.lock" in fail[0] and "folder is in the way" in fail[0]
    assert (out / "b" / SUMMARY).exists() and not (out / "a").exists()


@pytest.mark.slow
def test_7_no_inodes_for_the_lock_fails_that_slide_alone(tmp_path, models, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    make_square_slide(inp / "a.tiff")
    make_square_slide(inp / "b.tiff", seed=3)
    real_open = os.open

    def no_inodes(path, flags, *args, **kwargs):
        if str(path).endswith(".a.lock"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_inodes)
    outcomes = run_batch([inp / "a.tiff", inp / "b.tiff"], tmp_path / "out", Segmenter(models["fast"]))
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert "no space or inodes" in outcomes[0].error and "\n" not in outcomes[0].error


# ``tseg-rt run`` that stops at its first slide's first tile (its lock is held, its result not
# started) and prints "locked", then goes on when a line comes on its stdin.
PAUSED_RUN = """
import sys
from tseg.runtime.cli.main import main
from tseg.runtime.execution.segmenter import Segmenter

segment_slide = Segmenter.segment_slide


def paused(self, *args, **kwargs):
    print("locked", flush=True)
    sys.stdin.readline()
    return segment_slide(self, *args, **kwargs)


Segmenter.segment_slide = paused
sys.argv = ["tseg-rt", "run", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_7_a_slide_locked_by_a_live_process_is_waited_for_not_failed(tmp_path, models):
    import threading

    inp = tmp_path / "in"
    inp.mkdir()
    make_square_slide(inp / "big.tiff", width_um=5000, height_um=4000, tissue_um=(100, 100, 4800, 3800),
                      square_um=(1000, 1000, 1500, 1000))
    make_square_slide(inp / "small.tiff", seed=3)
    out = tmp_path / "out"
    (out).mkdir()
    (out / ".stale.lock").write_text('{"pid": 1}')  # left by a killed run: removed
    # The first run holds big's lock until the second is waiting for it (whatever the load).
    first = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(inp / "big.tiff"), "--engine",
                              str(models["slow"]), "--out", str(out), "--no-progress"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout.readline().strip() == "locked", first.communicate(timeout=60)[1]
        second = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "run", str(inp), "--engine",
                                   str(models["slow"]), "--out", str(out), "--no-progress"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second_err: list[str] = []
        waiting = threading.Event()

        def read_second() -> None:
            for line in second.stderr:
                second_err.append(line)
                if "waiting for" in line and f"process {first.pid}" in line:
                    waiting.set()
            waiting.set()  # it ended without waiting: the asserts below say so

        reader = threading.Thread(target=read_second, daemon=True)
        reader.start()
        waiting.wait(timeout=300)
        assert any("waiting for" in ln and f"process {first.pid}" in ln for ln in second_err), "".join(second_err)
        # Let the first run make big and release its lock.
        first_out, first_err = first.communicate(input="go\n", timeout=300)
        second_out = second.stdout.read()
        assert second.wait(timeout=300) == 0, "".join(second_err)
        reader.join(timeout=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0, first_err
    second_stderr = "".join(second_err)
    one_line_error(subprocess.CompletedProcess(second.args, second.returncode, second_out, second_stderr))
    assert f"process {first.pid}" in second_stderr and "big" in second_stderr
    assert "finished by" in second_stderr
    assert summary(out / "big")["areas"]["tumour_area_mm2"] == pytest.approx(1.5, rel=0.01)
    assert summary(out / "big")["worker"].endswith(f"pid {first.pid}")  # made by the first run, not redone
    assert (out / "small" / SUMMARY).exists()
    assert not list(out.glob(".*.lock")), "no lock files are left behind"


# --- 8. postprocess messages ------------------------------------------------------------------


@pytest.mark.slow
def test_8_postprocess_reports_each_bad_folder_in_one_line(tmp_path, models):
    (tmp_path / "in").mkdir()
    for name in ("good", "corrupt", "nomap"):
        make_square_slide(tmp_path / "in" / f"{name}.tiff")
    out = tmp_path / "out"
    assert cli("run", tmp_path / "in", "--engine", models["fast"], "--out", out, "--no-progress").returncode == 0
    (out / "corrupt" / SUMMARY).write_text('{"areas": {"tumour')
    (out / "nomap" / PROBABILITY).unlink()
    r = cli("postprocess", out, "--low", "40", "--high", "100")
    assert r.returncode == 1
    one_line_error(r)
    assert "JSONDecodeError" not in r.stderr and "WARN" not in r.stderr and "imread" not in r.stderr
    bad = [ln for ln in r.stderr.splitlines() if ln.startswith("failed")]
    assert len(bad) == 2 and any("corrupt" in ln and SUMMARY in ln for ln in bad)
    assert any("nomap" in ln and PROBABILITY in ln and "missing" in ln for ln in bad)
    assert "good" in r.stdout and summary(out / "good")["settings"]["low"] == 40


# --- 9. options and per-slide resolutions ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("option", [("--mpp", "0"), ("--mpp", "-1"), ("--mpp", "nan"), ("--mpp", "inf"),
                                    ("--reader-threads", "-3"), ("--low", "300"), ("--low", "200", "--high", "100")])
def test_9_bad_options_stop_before_any_slide_is_read(tmp_path, models, option):
    (tmp_path / "in").mkdir()
    make_square_slide(tmp_path / "in" / "s.tiff")
    r = cli("run", tmp_path / "in", "--engine", models["fast"], "--out", tmp_path / "o", "--no-progress", *option)
    assert r.returncode == 2, r.stderr
    one_line_error(r)
    assert not (tmp_path / "o").exists()


def _tiff_without_mpp(path: Path) -> Path:
    import tifffile

    img = square_slide_image()
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", photometric="rgb")
    return path


@pytest.mark.slow
def test_9_per_slide_resolutions_from_a_csv_and_override_warnings(tmp_path, models):
    nompp = _tiff_without_mpp(tmp_path / "in" / "nompp.tif")
    make_square_slide(tmp_path / "in" / "good.tiff")
    out = tmp_path / "out"
    r = cli("run", tmp_path / "in", "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 1 and "--mpp" in r.stderr and "open_slide(" not in r.stderr and "mpp=" not in r.stderr
    table = tmp_path / "slides.csv"
    table.write_text("path,mpp\nin/nompp.tif,0.5\nin/good.tiff,\n")
    r = cli("run", "--csv", table, "--engine", models["fast"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    s = summary(out / "nompp")
    assert s["slide"]["mpp_level0"] == [0.5, 0.5] and s["slide"]["mpp_source"] == "override"
    assert s["areas"]["tumour_area_mm2"] == pytest.approx(0.2, rel=0.03)
    # --mpp over slides with good metadata: done, with a warning that it overrode it.
    r = cli("run", tmp_path / "in" / "good.tiff", "--engine", models["fast"], "--out", tmp_path / "o2",
            "--mpp", "0.25", "--no-progress")
    assert r.returncode == 0 and "overrides the slide's plausible metadata" in r.stderr, r.stderr
    assert any("overrides" in w for w in summary(tmp_path / "o2" / "good")["warnings"])
    bad_table = tmp_path / "bad.csv"
    bad_table.write_text("path,mpp\nin/nompp.tif,zero\n")
    r = cli("run", "--csv", bad_table, "--engine", models["fast"], "--out", tmp_path / "o3", "--no-progress")
    assert r.returncode == 2 and "row 2" in r.stderr and not (tmp_path / "o3").exists()
    assert nompp.exists()


# --- 10. info and interruptions --------------------------------------------------------------


@pytest.mark.slow
def test_10_info_describes_a_slide_without_resolution_and_missing_files(tmp_path, models):
    nompp = _tiff_without_mpp(tmp_path / "nompp.tif")
    r = cli("info", nompp, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["vendor"] == "generic-tiff" and data["dimensions"] == [3200, 2400]
    assert data["levels"][0]["dimensions"] == [3200, 2400] and data["mpp"] is None
    assert data["resolution"].startswith("missing")
    r = cli("info", nompp)
    assert r.returncode == 0 and "missing" in r.stderr and "--mpp" in r.stderr
    r = cli("info", tmp_path / "missing.onnx")
    assert r.returncode == 2 and "missing.onnx" in r.stderr and "no such file" in r.stderr
    one_line_error(r)


@pytest.mark.slow
def test_10_sigint_says_what_was_interrupted_and_what_is_left(tmp_path, models):
    inp = tmp_path / "in"
    inp.mkdir()
    make_square_slide(inp / "a-first.tiff")
    make_square_slide(inp / "b-big.tiff", width_um=5000, height_um=4000, tissue_um=(100, 100, 4800, 3800),
                      square_um=(1000, 1000, 1500, 1000))
    make_square_slide(inp / "c-last.tiff", seed=2)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tseg.runtime.cli", "run", str(inp), "--engine",
                             str(models["slow"]), "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".b-big.lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    one_line_error(type("R", (), {"stderr": err}))
    assert "b-big.tiff" in err and "1 slide(s) finished" in err and "2 left" in err and "1 not started" in err
    assert (out / "a-first" / SUMMARY).exists() and not (out / "b-big").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name or p.suffix == ".lock"]


# --- 11. workers' logs and long names --------------------------------------------------------


@pytest.mark.slow
def test_11_two_workers_log_once_in_one_format_and_names_are_not_cut(tmp_path, models):
    inp = tmp_path / "in"
    inp.mkdir()
    long_name = "patient-0001-block-A12-section-03-stain-HE-scanner-Aperio-AT2-" + "x" * 40
    make_square_slide(inp / f"{long_name}.tiff")
    make_square_slide(inp / "short.tiff", seed=2)
    (inp / "broken.svs").write_bytes(b"\x00" * 1001)
    r = cli("run", inp, "--engine", models["no_contract"], "--out", tmp_path / "out", "--workers", "2",
            "--no-progress")
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("no 'tseg' model contract") == 1, r.stderr
    assert "WARNING:" not in r.stderr and "ERROR:" not in r.stderr
    assert long_name in r.stdout, r.stdout
    fail = [ln for ln in r.stderr.splitlines() if ln.startswith("failed")]
    assert len(fail) == 1 and str(inp / "broken.svs") in fail[0]
