"""DICOM objects of a result (SEG pyramid, fractional probability SEG, bulk annotations): they read
back into the PNG and GeoJSON outputs, refer to the source slide, pass highdicom's constructors,
a pydicom round trip and dciodvfy (dicom3tools), and are rebuilt only when the result changes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

pytest.importorskip("highdicom")

from requirements import require  # noqa: E402
from tseg.runtime.errors import InvalidArgumentError  # noqa: E402
from tseg.runtime.outputs import dicom as objects  # noqa: E402
from tseg.runtime.outputs.dicom_export import DicomOptions, export_dicom, make_options, read_manifest  # noqa: E402
from tseg.runtime.outputs.dicom_source import read_metadata_file  # noqa: E402
from dciodvfy import dciodvfy_errors  # noqa: E402


def _segment(slide, folder, model):
    from tseg.runtime.execution.segmenter import Segmenter
    from tseg.runtime.outputs.files import write_outputs

    with Segmenter(model) as segmenter:
        result = segmenter.segment_slide(slide)
    write_outputs(result, folder, 1.0)
    return result


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import make_colour_model

    return make_colour_model(tmp_path_factory.mktemp("model") / "m.onnx")


@pytest.fixture(scope="module")
def from_dicom(tmp_path_factory, dicom_wsi, model):
    """A result of the generated DICOM series (a folder of wsidicomizer files), with its objects."""
    files, _ = dicom_wsi
    folder = tmp_path_factory.mktemp("result") / "slide"
    result = _segment(files[0].parent, folder, model)
    entry = export_dicom(folder, DicomOptions())
    return folder, result, entry, files


def _level0(files):
    from tseg.runtime.outputs.dicom_source import read_headers, volume_levels

    return volume_levels(read_headers(files), "test")[0]


def _read(folder):
    mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_UNCHANGED) > 0
    tissue = cv2.imread(str(folder / "foreground.png"), cv2.IMREAD_UNCHANGED) > 0
    probability = cv2.imread(str(folder / "probability.png"), cv2.IMREAD_UNCHANGED)
    return mask, tissue, probability, json.loads((folder / "tumour.geojson").read_text())


def _objects(folder, kind):
    import pydicom

    return [pydicom.dcmread(str(folder / "dicom" / o["file"])) for o in read_manifest(folder)["objects"]
            if o["kind"] == kind]


def test_seg_reads_back_as_the_mask_and_tissue_on_the_slide_pyramid(from_dicom):
    import highdicom as hd
    import pydicom

    folder, result, _, files = from_dicom
    mask, tissue, _, _ = _read(folder)
    assert mask.any() and tissue.any() and result.regions == 1
    segs = _objects(folder, "seg")
    sources = {(int(d.TotalPixelMatrixColumns), int(d.TotalPixelMatrixRows)): d
               for d in (pydicom.dcmread(str(f), stop_before_pixels=True) for f in files) if d.ImageType[2] == "VOLUME"}
    for seg in segs:  # every level on the grid of a source level (Slim draws nothing else)
        size = (int(seg.TotalPixelMatrixColumns), int(seg.TotalPixelMatrixRows))
        assert size in sources and seg.DimensionOrganizationType == "TILED_FULL"
        src = sources[size].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert list(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing) == list(src)
        assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) == 2
    spacing = [float(s.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]) for s in segs]
    assert spacing == sorted(spacing) and spacing[0] * 1000 == pytest.approx(4.0)  # coarsest level <= 5 µm/px
    base = hd.seg.segread(folder / "dicom" / "tumour-seg-0.dcm")
    level0 = _level0(files)
    back = objects.read_segmentation(base, mask.shape, objects.result_pixel_um(level0, (1.0, 1.0)))
    assert objects.dsc(back[..., 0] > 0, mask) == 1.0 and np.array_equal(back[..., 0] > 0, mask)
    assert objects.dsc(back[..., 1] > 0, tissue) == 1.0


def test_probability_is_one_fractional_segment_read_back_exactly(from_dicom):
    import highdicom as hd
    import pydicom

    folder, _, _, files = from_dicom
    _, _, probability, _ = _read(folder)
    probs = _objects(folder, "probability")
    assert all(p.SegmentationType == "FRACTIONAL" and len(p.SegmentSequence) == 1 and p.MaximumFractionalValue == 255
               and p.DimensionOrganizationType == "TILED_FULL" for p in probs)
    assert len(probs) == len(_objects(folder, "seg"))
    level0 = _level0(files)
    back = objects.read_segmentation(hd.seg.segread(folder / "dicom" / "probability-seg-0.dcm"), probability.shape,
                                     objects.result_pixel_um(level0, (1.0, 1.0)))
    assert np.array_equal(back[..., 0], probability)


def test_annotations_match_the_geojson_holes_included(from_dicom):
    import highdicom as hd
    import pydicom
    from shapely.geometry import shape

    folder, _, _, files = from_dicom
    _, _, _, geojson = _read(folder)
    reference = [shape(f["geometry"]) for f in geojson["features"]]
    assert any(len(p.interiors) for p in reference)  # the slide's tumour has a hole
    ann = hd.ann.annread(folder / "dicom" / "tumour-annotations.dcm")
    assert ann.AnnotationCoordinateType == "3D"
    groups = {g.label: g for g in ann.get_annotation_groups()}
    assert set(groups) == {"Tumor", "Tumor hole"}
    assert all(g.graphic_type == hd.ann.GraphicTypeValues.POLYGON for g in groups.values())
    level0 = _level0(files)
    polygons = objects.read_annotations(ann, level0)
    assert len(polygons) == len(reference) and objects.polygon_iou(polygons, reference) >= 0.99
    names, values, units = groups["Tumor"].get_measurements()
    exact = sum(p.area for p in reference) * 1e-6  # level-0 px are 1 µm
    assert names[0].meaning == "Area" and units[0].value == "mm2"
    assert float(np.sum(values)) == pytest.approx(exact, rel=1e-5)


def test_objects_refer_to_the_source_and_name_the_algorithm(from_dicom):
    import pydicom

    folder, _, entry, files = from_dicom
    source = _level0(files)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dicom"] == entry and entry["source"]["kind"] == "dicom" and not entry["warnings"]
    sha = summary["model"]["backend"]["sha256"]
    series = set()
    for kind in ("seg", "probability", "annotations"):
        for ds in _objects(folder, kind):
            assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.FrameOfReferenceUID == source.FrameOfReferenceUID
            assert ds.SeriesInstanceUID != source.SeriesInstanceUID
            assert ds.PatientID == source.PatientID and ds.ContainerIdentifier == source.ContainerIdentifier
            assert source.SeriesInstanceUID in {r.SeriesInstanceUID for r in ds.ReferencedSeriesSequence}
            series.add(ds.SeriesInstanceUID)
            items = ds.SegmentSequence if kind != "annotations" else ds.AnnotationGroupSequence
            algorithm = items[0].SegmentationAlgorithmIdentificationSequence[0] if kind != "annotations" else \
                items[0].AnnotationGroupAlgorithmIdentificationSequence[0]
            assert algorithm.AlgorithmVersion == f"sha256:{sha[:12]}" and sha in algorithm.AlgorithmParameters
            assert algorithm.AlgorithmName == summary["model"]["contract"]["name"]
    assert len(series) == 3  # three new series in the slide's study


@pytest.mark.slow
def test_every_object_passes_a_pydicom_round_trip_and_dciodvfy(from_dicom):
    import pydicom

    folder, _, _, _ = from_dicom
    for obj in read_manifest(folder)["objects"]:
        path = folder / "dicom" / obj["file"]
        ds = pydicom.dcmread(str(path))
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        assert again == ds and again.SOPInstanceUID == obj["sop_instance_uid"]
        assert dciodvfy_errors(path, obj["kind"]) == [], obj["file"]


@pytest.mark.slow
def test_non_dicom_slide_gets_a_new_study_with_the_site_metadata(tmp_path, dicom_wsi, model):
    import pydicom

    _, tiff = dicom_wsi
    table = tmp_path / "site.csv"
    table.write_text("path,patient_id,patient_name,patient_birth_date,patient_sex,accession_number,container_id,"
                     f"specimen_id\n{tiff},P-17,Doe^Jane,1970-01-31,F,ACC-9,SLIDE-3,S-3\n")
    options = make_options(metadata_file=table)
    stand_in = tmp_path / "stand-in"
    _segment(tiff, stand_in, model)
    entry = export_dicom(stand_in, options)
    assert entry["source"]["kind"] == "stand-in" and not entry["warnings"]
    seg = _objects(stand_in, "seg")[0]
    assert (seg.PatientID, str(seg.PatientName), seg.PatientBirthDate, seg.PatientSex) == ("P-17", "Doe^Jane",
                                                                                           "19700131", "F")
    assert seg.AccessionNumber == "ACC-9" and seg.ContainerIdentifier == "SLIDE-3"
    assert seg.SpecimenDescriptionSequence[0].SpecimenIdentifier == "S-3"
    assert seg.StudyInstanceUID == entry["source"]["study_instance_uid"]
    converted = tmp_path / "converted"
    shutil.copytree(stand_in, converted)
    entry2 = export_dicom(converted, make_options(convert_slide=True, metadata_file=table))
    manifest = read_manifest(converted)
    slide_files = [converted / "dicom" / o["file"] for o in manifest["objects"] if o["kind"] == "slide"]
    assert entry2["source"]["kind"] == "converted" and slide_files
    level0 = _level0(slide_files)
    assert level0.PatientID == "P-17" and level0.StudyInstanceUID == entry["source"]["study_instance_uid"]
    seg = _objects(converted, "seg")[0]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == level0.SeriesInstanceUID
    mask, _, _, _ = _read(converted)
    back = objects.read_segmentation(seg, mask.shape, objects.result_pixel_um(level0, (1.0, 1.0)))
    assert objects.dsc(back[..., 0] > 0, mask) == 1.0
    for obj in manifest["objects"]:
        if obj["kind"] != "slide":
            assert dciodvfy_errors(converted / "dicom" / obj["file"], obj["kind"]) == [], obj["file"]


@pytest.mark.slow
def test_a_slide_without_site_metadata_is_written_with_a_warning(tmp_path, dicom_wsi, model):
    _, tiff = dicom_wsi
    _segment(tiff, tmp_path / "r", model)
    entry = export_dicom(tmp_path / "r", DicomOptions())
    assert any("no site metadata" in w for w in entry["warnings"])
    assert _objects(tmp_path / "r", "seg")[0].PatientID == ""


def test_incomplete_dicom_source_is_completed_with_warnings(tmp_path, model):
    from dicomwsi import square_slide_image, write_dicom_wsi

    write_dicom_wsi(tmp_path / "series", square_slide_image(), 0.5)  # no orientation, origin or specimen
    _segment(tmp_path / "series", tmp_path / "r", model)
    entry = export_dicom(tmp_path / "r", DicomOptions())
    text = " ".join(entry["warnings"])
    assert "Image Orientation" in text and "Origin" in text and "Specimen" in text


def test_objects_are_rebuilt_only_when_the_result_changes(tmp_path, from_dicom):
    from tseg.runtime.outputs.files import repostprocess

    folder = tmp_path / "copy"
    shutil.copytree(from_dicom[0], folder)
    before = read_manifest(folder)
    export_dicom(folder, DicomOptions())
    assert read_manifest(folder) == before  # current: nothing rebuilt
    repostprocess(folder, 250, 255)  # other thresholds: another mask
    export_dicom(folder, DicomOptions())
    after = read_manifest(folder)
    assert after["made_from"] != before["made_from"] and after["uids"] == before["uids"]
    assert {o["sop_instance_uid"] for o in after["objects"]}.isdisjoint(o["sop_instance_uid"] for o in before["objects"])
    assert not list(folder.glob(".dicom*")) and cv2.imread(str(folder / "mask.png"), 0).max() == 0
    assert {o["kind"] for o in after["objects"]} == {"seg", "probability"}  # no region: no annotation object


def test_bad_site_metadata_files_name_file_row_and_column(tmp_path):
    bad = tmp_path / "site.csv"
    for content, words in (("slide,patient_id\nx,1\n", "needs a 'path' column"),
                           ("path,patient_sex\nx,X\n", "row 2: patient_sex must be M, F or O"),
                           ("path,patient_birth_date\nx,31/01/1970\n", "must be a date"),
                           ("path,accession_number\nx,12345678901234567\n", "at most 16 characters"),
                           ("path,favourite_colour\nx,blue\n", "unknown column 'favourite_colour'")):
        bad.write_text(content)
        with pytest.raises(InvalidArgumentError, match=words):
            read_metadata_file(bad)
    with pytest.raises(InvalidArgumentError, match="http"):
        make_options(stow_url="pacs.example.org/dicom-web")


def test_corrected_site_metadata_makes_a_new_study(tmp_path, dicom_wsi, model):
    """Objects an archive may already hold under one patient are never re-sent under another."""
    _, tiff = dicom_wsi
    folder = tmp_path / "r"
    _segment(tiff, folder, model)
    table = tmp_path / "site.csv"
    table.write_text(f"path,patient_id\n{tiff},WRONG\n")
    first = export_dicom(folder, make_options(metadata_file=table))
    table.write_text(f"path,patient_id\n{tiff},P-1\n")
    second = export_dicom(folder, make_options(metadata_file=table))
    assert _objects(folder, "seg")[0].PatientID == "P-1"
    assert second["source"]["study_instance_uid"] != first["source"]["study_instance_uid"]
    assert export_dicom(folder, make_options(metadata_file=table)) == second  # unchanged: nothing rebuilt


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_non_ascii_names_are_written_as_utf8_with_their_character_set(tmp_path, dicom_wsi, model):
    """Issue 29, defect 4: ISO_IR 192 declared (PS3.3 C.12.1.1.2) and the bytes UTF-8, in every
    object and in the slide's conversion."""
    import pydicom

    _, tiff = dicom_wsi
    table = tmp_path / "site.csv"
    table.write_text(f"path,patient_id,patient_name,institution_name\n{tiff},P-1,Müller^Jörg,Hôpital Saint-Éloi\n",
                     encoding="utf-8")
    folder = tmp_path / "r"
    _segment(tiff, folder, model)
    export_dicom(folder, make_options(convert_slide=True, metadata_file=table))
    objs = read_manifest(folder)["objects"]
    assert {o["kind"] for o in objs} >= {"slide", "seg", "probability", "annotations"}
    for obj in objs:
        raw = (folder / "dicom" / obj["file"]).read_bytes()
        assert "Müller^Jörg".encode() in raw and "Müller".encode("latin-1") not in raw, obj["file"]
        ds = pydicom.dcmread(str(folder / "dicom" / obj["file"]), stop_before_pixels=True)
        assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Jörg", obj["file"]


def test_the_same_result_gets_the_same_uids_and_a_changed_one_names_what_it_supersedes(tmp_path, from_dicom,
                                                                                       caplog):
    """Issue 29, defect 5: UIDs derived from the result's content, so a re-send of an unchanged
    result (``--overwrite``, or a lost ``dicom/``) replaces instead of duplicating; a changed
    result gets new series that say what they were made with and name the series they supersede."""
    import pydicom

    from tseg.runtime.outputs.files import repostprocess

    folder = tmp_path / "copy"
    shutil.copytree(from_dicom[0], folder)
    before = read_manifest(folder)
    shutil.rmtree(folder / "dicom")
    export_dicom(folder, DicomOptions())
    again = read_manifest(folder)
    assert [(o["file"], o["sop_instance_uid"], o["series_instance_uid"]) for o in again["objects"]] == \
        [(o["file"], o["sop_instance_uid"], o["series_instance_uid"]) for o in before["objects"]]
    assert not again["supersedes"]
    repostprocess(folder, 250, 255)
    with caplog.at_level("INFO"):
        entry = export_dicom(folder, DicomOptions())
    after = read_manifest(folder)
    old = {o["kind"]: o["series_instance_uid"] for o in before["objects"]}
    assert after["supersedes"] == old == entry["supersedes"]  # the annotations too: there is no region now
    seg = pydicom.dcmread(str(folder / "dicom" / "tumour-seg-0.dcm"), stop_before_pixels=True)
    assert seg.SeriesInstanceUID != old["seg"] and "t250-255" in seg.SeriesDescription
    assert json.loads((folder / "summary.json").read_text())["dicom"]["supersedes"] == old
    assert any(old["seg"] in r.getMessage() and "supersedes" in r.getMessage() for r in caplog.records)


def test_local_codes_are_identified_and_descriptions_keep_the_hash_whole(from_dicom):
    """Issue 29, defect 9: 99TSEGRT has a Coding Scheme Identification item; Content
    Description is not cut in the middle of the model's hash."""
    folder, _, _, _ = from_dicom
    sha = json.loads((folder / "summary.json").read_text())["model"]["backend"]["sha256"]
    ann = _objects(folder, "annotations")[0]
    schemes = {item.CodingSchemeDesignator: item for item in ann.CodingSchemeIdentificationSequence}
    assert "99TSEGRT" in schemes and schemes["99TSEGRT"].CodingSchemeName
    for kind in ("seg", "probability", "annotations"):
        for ds in _objects(folder, kind):
            assert len(ds.ContentDescription) <= 64 and ds.ContentDescription.endswith(f"sha256:{sha[:12]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_overwrite_keeps_the_uids_and_names_what_a_changed_result_supersedes(tmp_path, dicom_wsi, model):
    """Issue 29, defect 5 through ``run --overwrite``: the same result is the same instances (no
    rebuild); other thresholds make new series that name the ones they supersede."""
    from tseg.runtime.cohort.runner import process_slide
    from tseg.runtime.execution.segmenter import Segmenter

    _, tiff = dicom_wsi
    options = DicomOptions()
    with Segmenter(model) as segmenter:
        first = process_slide(segmenter, tiff, tmp_path, dicom=options)
        before = read_manifest(tmp_path / "slide")
        again = process_slide(segmenter, tiff, tmp_path, overwrite=True, dicom=options)
        assert first.status == again.status == "done", (first.error, again.error)
        assert read_manifest(tmp_path / "slide")["objects"] == before["objects"]
        changed = process_slide(segmenter.with_settings(low=250, high=255), tiff, tmp_path, overwrite=True, dicom=options)
        assert changed.status == "done", changed.error
    old = {o["kind"]: o["series_instance_uid"] for o in before["objects"]}
    assert read_manifest(tmp_path / "slide")["supersedes"] == old
    assert changed.summary["dicom"]["supersedes"] == old
