"""The files of a result folder: written from a Result, and post-processed again from them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import make_colour_model
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.outputs.files import GEOJSON, MASK, OUTPUT_FILES, repostprocess, write_outputs
from tseg.runtime.outputs.summary import SUMMARY


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A 1 µm/px image (1200 x 1000 px) of tissue with a dark-red 500 x 400 px square (the
    colour model's tumour)."""
    model = make_colour_model(tmp_path_factory.mktemp("m") / "colour.onnx", tile=256, overlap=32)
    rgb = np.full((1000, 1200, 3), (230, 180, 200), np.uint8)
    rgb[300:700, 400:900] = (60, 20, 80)
    with Segmenter(model) as segmenter:
        return segmenter.segment_image(rgb, foreground=np.ones(rgb.shape[:2], bool))  # all of it is tissue


def test_every_output_is_written_summary_last(result, tmp_path):
    written = write_outputs(result, tmp_path / "r")
    assert sorted(p.name for p in written) == sorted(OUTPUT_FILES)
    assert written[-1].name == SUMMARY
    summary = json.loads((tmp_path / "r" / SUMMARY).read_text(encoding="utf-8"))
    assert summary["outputs"] == sorted(set(OUTPUT_FILES) - {SUMMARY}) + [SUMMARY]  # what the folder holds
    mask = cv2.imread(str(tmp_path / "r" / MASK), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask > 0, result.mask)
    assert summary["areas"]["tumour_area_mm2"] == pytest.approx(0.5 * 0.4, rel=0.01)  # 500 x 400 µm


def test_postprocessing_again_with_the_same_thresholds_changes_nothing(result, tmp_path):
    folder = tmp_path / "r"
    write_outputs(result, folder)
    before = {name: (folder / name).read_bytes() for name in (MASK, GEOJSON)}
    summary = repostprocess(folder, int(result.summary["settings"]["low"]), int(result.summary["settings"]["high"]),
                            bool(result.summary["settings"]["prune"]))
    assert {name: (folder / name).read_bytes() for name in (MASK, GEOJSON)} == before
    assert summary["areas"] == result.summary["areas"]


def test_postprocess_changes_all_files_or_none(result, tmp_path, monkeypatch):
    """The disk filling while `postprocess` writes overlay.png must not leave mask.png with the
    new thresholds beside a summary.json with the old ones (the next run then skipped the slide as
    finished and `eval` scored the inconsistent mask): the result's files change together or not
    at all, and no staging folder is left behind."""
    import builtins
    import errno

    from tseg.runtime.errors import OutputError
    from tseg.runtime.outputs import files

    folder = tmp_path / "out" / "r"
    write_outputs(result, folder)
    (folder / "dicom").mkdir()
    (folder / "dicom" / "seg.dcm").write_bytes(b"DICM")  # other contents of the folder come along
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    real_open = builtins.open

    def full_disk_open(path, *args, **kwargs):
        if "overlay.png" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_disk_open, raising=False)
    with pytest.raises(OutputError, match="disk is full"):
        repostprocess(folder, 250, 254, True)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r"]  # no staging folder left
    monkeypatch.undo()
    summary = repostprocess(folder, 250, 254, True)
    assert summary["settings"]["low"] == 250 and json.loads((folder / SUMMARY).read_text())["settings"]["high"] == 254
    assert (folder / MASK).read_bytes() != before[MASK] and (folder / "dicom" / "seg.dcm").read_bytes() == b"DICM"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r"]


def test_postprocess_switches_by_two_renames_where_names_cannot_be_exchanged(result, tmp_path, monkeypatch):
    """On a file system without atomic exchange (NFS, SMB) the new set still replaces the old one
    whole, and nothing is left beside it."""
    from tseg.runtime.util import atomic

    folder = tmp_path / "out" / "r"
    write_outputs(result, folder)
    monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    summary = repostprocess(folder, 250, 254, True)
    assert json.loads((folder / SUMMARY).read_text())["settings"]["low"] == 250 == summary["settings"]["low"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r"]


def test_exchange_paths_swaps_two_folders(tmp_path):
    from tseg.runtime.util.atomic import exchange_paths

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")
    if not exchange_paths(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this file system cannot exchange names (the two-rename path is tested above)")
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"
