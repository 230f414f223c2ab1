"""DICOM outputs of a DICOM WSI series made the way a real scanner's series of issue 29 is: levels
down to 1 x 1 px (a level smaller than a tile is one frame of its own size), no Slice Thickness,
and a Frame of Reference per level. Every object is made, reads back with highdicom's own
readers and passes dciodvfy (apart from its known false positives)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("highdicom")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # segments a generated series first

from tseg.runtime.outputs.dicom_export import DicomOptions, export_dicom, read_manifest  # noqa: E402
from dciodvfy import dciodvfy_errors  # noqa: E402


@pytest.fixture(scope="module")
def scanner_result(tmp_path_factory):
    """A finished result (no DICOM objects yet) of the scanner-like series, and its files."""
    from dicomwsi import square_slide_image, write_dicom_wsi
    from helpers import make_colour_model
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.outputs.files import write_outputs

    root = tmp_path_factory.mktemp("scanner")
    img = square_slide_image(1600, 1200, 1.0, square_um=(400, 300, 600, 500))
    files = write_dicom_wsi(root / "series", img, 1.0, scanner_like=True)
    model = make_colour_model(root / "m.onnx")
    with Segmenter(model) as segmenter:
        result = segmenter.segment_slide(root / "series")
    write_outputs(result, root / "result", 1.0)
    return root / "result", files


@pytest.fixture()
def exported(scanner_result, tmp_path):
    folder, files = scanner_result
    copy = tmp_path / "result"
    shutil.copytree(folder, copy)
    return copy, export_dicom(copy, DicomOptions()), files


def test_a_pyramid_down_to_one_pixel_gets_every_object(exported):
    """Defect 2: JPEG 2000 cannot encode frames under 32 px; those probability levels are left
    out (or the pyramid written uncompressed), and nothing else is lost."""
    folder, entry, _ = exported
    kinds = [o["kind"] for o in read_manifest(folder)["objects"]]
    assert {"seg", "probability", "annotations"} <= set(kinds), kinds
    assert entry["series"]["probability"]["instances"] >= 1


def test_segs_read_back_with_highdicom_without_slice_thickness_in_the_source(exported):
    """Defect 3: Pixel Measures get a Slice Thickness (type 1C) the source lacks."""
    import highdicom as hd

    folder, _, _ = exported
    for obj in read_manifest(folder)["objects"]:
        path = folder / "dicom" / obj["file"]
        if obj["kind"] in ("seg", "probability"):
            seg = hd.seg.segread(path)
            measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            assert float(measures.SliceThickness) > 0
        else:
            hd.ann.annread(path)
        assert dciodvfy_errors(path, obj["kind"]) == [], obj["file"]


def test_one_frame_of_reference_for_every_object(exported, caplog):
    """Defect 7: a per-level Frame of Reference in the source becomes the base level's in every
    object, with a warning naming the source's inconsistency."""
    import pydicom

    folder, entry, files = exported
    level0 = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    frames = {str(pydicom.dcmread(str(folder / "dicom" / o["file"]), stop_before_pixels=True).FrameOfReferenceUID)
              for o in read_manifest(folder)["objects"]}
    assert frames == {str(level0.FrameOfReferenceUID)}
    assert any("Frame of Reference" in w and "per level" in w for w in entry["warnings"]), entry["warnings"]


def test_one_object_failing_does_not_stop_the_others_and_is_not_called_transient(scanner_result, tmp_path):
    """Defect 2: a deterministic failure (here a hand-edited tumour.geojson) leaves the other
    objects written and never says "retry"."""
    import json
    import time

    from tseg.runtime.cohort.outcomes import SlideOutcome
    from tseg.runtime.cohort.runner import with_dicom
    from tseg.runtime.errors import OutputError

    folder, _ = scanner_result
    copy = tmp_path / "result"
    shutil.copytree(folder, copy)
    geojson = json.loads((copy / "tumour.geojson").read_text())
    geojson["features"][0]["geometry"]["coordinates"][0][1] = ["x", "y"]
    (copy / "tumour.geojson").write_text(json.dumps(geojson))
    with pytest.raises(OutputError, match="tumour regions object") as caught:
        export_dicom(copy, DicomOptions())
    assert "retry" not in str(caught.value) and "same" in str(caught.value)
    kinds = {o["kind"] for o in read_manifest(copy)["objects"]}
    assert kinds == {"seg", "probability"}
    outcome = with_dicom(SlideOutcome("s", "s", "done"), copy, DicomOptions(), time.perf_counter())
    assert outcome.status == "failed" and "retry" not in outcome.error_cli and "tumour regions" in outcome.error_cli
