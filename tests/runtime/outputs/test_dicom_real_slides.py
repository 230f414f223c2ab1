"""DICOM outputs (``--dicom-out``) of the real H&E files of the corpus (``../shared/slides``,
MANIFEST.md): every object reads back with highdicom's own readers (``segread``, ``annread``)
into the result's files and passes dciodvfy apart from its known false positives.

The Aperio SVS is written as DICOM WSI too (``--dicom-wsi``, the way it goes into an archive);
the PixelMed series is a DICOM source (one 16 x 16 px level: one SEG instance, no pyramid). The
Google DICOM (one 29 µm/px level) has no result to write: the method refuses it (its corpus test)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("highdicom")

from dciodvfy import dciodvfy_errors  # noqa: E402
from helpers import shared_corpus_dir  # noqa: E402
from tseg.runtime.outputs import dicom as objects  # noqa: E402
from tseg.runtime.outputs.dicom_export import export_dicom, make_options, read_manifest  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
SLIDES = {"svs/CMU-1-Small-Region.svs": "converted", "dicom/pixelmed-boxes": "dicom"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import make_colour_model

    return make_colour_model(tmp_path_factory.mktemp("model") / "m.onnx")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(SLIDES))
def test_dicom_outputs_of_real_he_files_read_back_and_validate(name, model, tmp_path):
    import highdicom as hd
    from shapely.geometry import shape

    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.outputs.dicom_source import read_headers, volume_levels
    from tseg.runtime.outputs.files import write_outputs

    slide = shared_corpus_dir() / name
    with Segmenter(model) as segmenter:
        result = segmenter.segment_slide(slide)
    folder = tmp_path / "result"
    write_outputs(result, folder, 1.0)
    table = tmp_path / "site.csv"
    table.write_text(f"path,patient_id,patient_name,container_id\n{slide.resolve()},P-1,Test^Slide,S-1\n")
    entry = export_dicom(folder, make_options(convert_slide=True, metadata_file=table))
    assert entry["source"]["kind"] == SLIDES[name]
    manifest = read_manifest(folder)
    files = {o["kind"]: [] for o in manifest["objects"]}
    for o in manifest["objects"]:
        files[o["kind"]].append(folder / "dicom" / o["file"])
    assert not manifest["failed"] and len(files["seg"]) == len(files["probability"]) >= 1
    summary = json.loads((folder / "summary.json").read_text())
    mpp0 = tuple(summary["slide"]["mpp_level0"])
    sources = files.get("slide") or [p for p in sorted(slide.glob("*.dcm"))]
    level0 = volume_levels(read_headers(sources), name)[0]
    result_um = objects.result_pixel_um(level0, mpp0)
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED) > 0
    probability = cv2.imread(str(folder / "probability.png"), cv2.IMREAD_UNCHANGED)
    seg = hd.seg.segread(files["seg"][0])
    assert np.array_equal(objects.read_segmentation(seg, mask.shape, result_um)[..., 0] > 0, mask)
    back = objects.read_segmentation(hd.seg.segread(files["probability"][0]), probability.shape, result_um)
    assert np.array_equal(back[..., 0], probability)
    geojson = json.loads((folder / "tumour.geojson").read_text())
    if "annotations" in files:
        polygons = objects.read_annotations(hd.ann.annread(files["annotations"][0]), level0)
        reference = [shape(f["geometry"]) for f in geojson["features"]]
        assert objects.polygon_iou(polygons, reference) >= 0.99
    else:
        assert not geojson["features"]
    for kind in ("seg", "probability", "annotations"):
        for path in files.get(kind, []):
            assert dciodvfy_errors(path, kind) == [], path.name
