"""Hostile input, round 2 (issue 31): files beside the slides that used to stop a whole search
or fail a slide at its last step (malformed DICOM headers, tall slides' overlays, planted result
images, eval references, read-only results). Each test builds the bad input and checks that it
fails alone, in one clear line, or not at all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers import make_square_slide

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # the planted text


def malformed_dcm(path: Path, sop_class: str, columns: object, vr: str = "UL") -> Path:
    """A DICOM file (no pixels) whose TotalPixelMatrixColumns is ``columns`` stored as ``vr``:
    two values, or text where a number belongs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    text = isinstance(columns, str)  # pydicom will not write text as a number: patched in below
    ds.add_new(0x00480006, vr, "98765432" if text else columns)  # TotalPixelMatrixColumns
    ds.TotalPixelMatrixRows = 10
    ds.save_as(path, enforce_file_format=True)
    if text:
        path.write_bytes(path.read_bytes().replace(b"98765432", str(columns).encode().ljust(8)))
    return path


MALFORMED_DCM = {
    "two_values.dcm": (SECONDARY_CAPTURE, [10, 20], "UL"),
    "text.dcm": (WSI_SOP_CLASS, "abc", "IS"),
    "zero.dcm": (WSI_SOP_CLASS, 0, "UL"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_DCM))
def test_a_malformed_dicom_header_is_an_unreadable_file_not_an_exception(tmp_path, name):
    from tseg.runtime.wsi.dicom_source import read_header

    header = read_header(malformed_dcm(tmp_path / name, *MALFORMED_DCM[name]))
    assert header.error and "TotalPixelMatrixColumns" in header.error and not header.is_wsi, header


def test_malformed_dicom_files_in_a_searched_folder_are_skipped_and_the_slides_found(tmp_path):
    """One stray malformed .dcm used to stop the whole search (run, report --slides, watch)."""
    from tseg.runtime.cohort.slide_lists import find_slides
    from tseg.runtime.service.watch import dicom_series_complete

    (tmp_path / "scans" / "stray").mkdir(parents=True)
    for name, args in MALFORMED_DCM.items():
        malformed_dcm(tmp_path / "scans" / "stray" / name, *args)
    good = make_square_slide(tmp_path / "scans" / "good.tiff")["path"]
    assert find_slides([tmp_path / "scans"]) == [good]
    series, why = dicom_series_complete(sorted((tmp_path / "scans" / "stray").iterdir()))
    assert series == [] and "not a readable DICOM file" in why, why


# --- a read-only results folder -----------------------------------------------------------------


def test_a_folder_that_refuses_even_removing_the_temporary_file_gives_the_clear_error(tmp_path, monkeypatch):
    """On a read-only file system the clean-up's unlink fails too (EROFS, even for a file that was
    never made); it used to raise that instead of the error naming the file and the fix."""
    import errno

    from tseg.runtime.errors import OutputError
    from tseg.runtime.util.atomic import write_text

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OutputError, match=r"cohort.csv: cannot write: the folder is read-only.*writable"):
        write_text(tmp_path / "cohort.csv", "x")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with one finished result ``s`` (run once; tests work on copies)."""
    import subprocess

    from helpers import make_colour_model

    tmp = tmp_path_factory.mktemp("finished")
    model = make_colour_model(tmp / "fast.onnx", tile=1024, overlap=64)
    slide = make_square_slide(tmp / "s.tiff")["path"]
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "run", str(slide), "--engine", str(model),
                        "--out", str(tmp / "out"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tmp / "out"


@pytest.fixture
def read_only_results(tmp_path, finished):
    """A copy of :func:`finished` seen through a read-only bind mount (needs root and mount rights:
    skipped where they are missing)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only bind mount needs root")
    out, view = tmp_path / "out", tmp_path / "view"
    shutil.copytree(finished, out)
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(out), str(view)], capture_output=True).returncode != 0:
        pytest.skip("mount --bind is not permitted here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode != 0:
            pytest.skip("a read-only remount is not permitted here")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize("command", [["report", "{out}"], ["postprocess", "{out}/s", "--low", "100"]])
def test_report_and_postprocess_on_a_read_only_results_folder_say_so_in_one_line(read_only_results, command):
    import subprocess

    args = [a.format(out=read_only_results) for a in command]
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "read-only" in r.stderr and str(read_only_results) in r.stderr, r.stderr


# --- eval references -----------------------------------------------------------------------------

SQUARE = [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]
REFERENCES = {
    "geometry_list.geojson": ('{"type": "Feature", "geometry": [1, 2], "properties": {}}', None,
                              "feature 0: its geometry is list"),
    "geometry_text.geojson": ('[{"type": "Feature", "geometry": "Polygon", "properties": {}}]', None,
                              "feature 0: its geometry is str"),
    "properties_text.geojson": ('{"type": "Feature", "properties": "Tumor", "geometry": {"type": "Polygon", '
                                f'"coordinates": {SQUARE}}}}}', ["Tumor"], "feature 0: its properties are str"),
    "deep.geojson": ("[" * 100000 + "]" * 100000, None, "nested too deeply"),
    "vertex.xml": ('<Annotations><Annotation><Regions><Region Id="7"><Vertices><Vertex X="abc" Y="1"/>'
                   '<Vertex X="5" Y="1"/><Vertex X="5" Y="9"/></Vertices></Region></Regions></Annotation>'
                   "</Annotations>", None, "region 7: vertex X='abc'"),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_malformed_eval_references_are_refused_naming_the_file_and_the_place(tmp_path, name):
    from tseg.runtime.errors import AnnotationError
    from tseg.runtime.evaluation.annotations import read_annotation

    text, classes, says = REFERENCES[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(AnnotationError, match=says) as info:
        read_annotation(tmp_path / name, classes=classes)
    assert name in str(info.value)


# --- tall and portrait slides ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [(6, 10000), (100, 20000), (5000, 15600)])
def test_the_legend_of_a_tall_map_follows_its_width_and_the_picture_stays_readable(size):
    """A 6 x 10000 map got a 6660 x 13907 overlay, and a 0.5 x 100 mm slide's (100 x 20000 at
    5 µm/px) failed with Pillow's DecompressionBombError after inference."""
    import numpy as np

    from tseg.runtime.outputs.overlay import OverlayLegend, legend_font_px, render_overlay

    w, h = size
    assert legend_font_px(w, h) == legend_font_px(w, 2 * w)  # taller than 2:1: the text of a 2:1 map
    if w * h > 2e7:
        return  # the big map: the font size is the check (rendering it takes seconds)
    mask = np.zeros((h, w), bool)
    mask[h // 3 : h // 2] = True
    picture = render_overlay(np.full((h, w, 3), 230, np.uint8), (mask * 250).astype(np.uint8), mask,
                             np.ones((h, w), bool), legend=OverlayLegend(title="tall", pixel_um=5.0))
    assert picture.shape[1] <= max(w, 30 * 18) and picture.shape[0] < h + 60 * 18, picture.shape


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_half_millimetre_wide_strip_of_100_mm_is_processed_to_the_end(tmp_path):
    """0.5 x 100 mm (500 x 100000 px at 1 µm/px): inside every size check, so no output step may
    fail it (it failed drawing the overlay, after inference)."""
    import subprocess

    from helpers import make_claimed_tiff, make_colour_model

    slide = make_claimed_tiff(tmp_path / "strip.tiff", 500, 100000, 1.0)
    model = make_colour_model(tmp_path / "fast.onnx", tile=1024, overlap=64)
    r = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "run", str(slide), "--engine", str(model), "--out",
                        str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=280)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "out" / "strip" / "overlay.png").is_file()


# --- images planted in a result folder (item 6) ---------------------------------------------------


def claimed_png(path: Path, width: int, height: int) -> Path:
    """A few-hundred-byte PNG whose header claims ``width`` x ``height`` px (its data is cut)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096)))
                     + chunk(b"IEND", b""))
    return path


def test_an_overlay_whose_header_claims_more_than_its_map_is_not_decoded(tmp_path):
    import json

    from tseg.runtime.outputs.summary import overlay_problem

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"slide": {"size_at_overview_mpp": [300, 200]}}))
    assert overlay_problem(folder, claimed_png(folder / "overlay.png", 540, 500).read_bytes()) is None
    problem = overlay_problem(folder, claimed_png(folder / "overlay.png", 25000, 25000).read_bytes())
    assert problem and "25000 x 25000 px" in problem and "300 x 200 px map" in problem
    (folder / "summary.json").unlink()  # no summary: the largest slide's overlay is the bound
    assert "20000 x 20000 px map" in overlay_problem(folder, claimed_png(folder / "o.png", 60000, 60000).read_bytes())
    assert overlay_problem(folder, b"GIF89a...") == "not a PNG image"


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_the_report_makes_no_thumbnail_of_a_planted_huge_overlay(tmp_path, finished, caplog):
    import shutil

    from tseg.runtime.cohort.report import write_report

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    claimed_png(out / "s" / "overlay.png", 25000, 25000)
    made = write_report(out)
    assert made.thumbnails == 0 and [row["name"] for row in made.rows] == ["s"]
    assert "header claims 25000 x 25000 px" in caplog.text


@pytest.mark.parametrize("name", sorted(MALFORMED_DCM))
def test_a_malformed_dicom_header_is_named_under_pydicoms_strict_mode_too(tmp_path, name):
    """Importing wsidicomizer (``--dicom-wsi``) turns pydicom's strict reading on for the whole
    process: the header's bad attribute must still be named (it read "Invalid value for VR IS")."""
    import pydicom.config

    from tseg.runtime.wsi.dicom_source import read_header

    with pydicom.config.strict_reading():
        header = read_header(malformed_dcm(tmp_path / name, *MALFORMED_DCM[name]))
    assert header.error and "TotalPixelMatrixColumns" in header.error and not header.is_wsi, header
