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
