"""H&E only: generated slides that are not brightfield (grey TIFF, fluorescence OME-TIFF, DICOM
with epifluorescence illumination) are refused with the reason from their metadata unless forced;
the reasons read from each kind of metadata (wsi/brightfield.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dicomwsi import square_slide_image, write_dicom_wsi
from helpers import make_colour_model, make_square_slide
from tseg.runtime.errors import NonBrightfieldError
from tseg.runtime.wsi.brightfield import dicom_reason, ndpi_reason, ome_reason, properties_reason, qptiff_reason
from tseg.runtime.wsi.slide import open_slide


def _grey_tiff(path):
    import tifffile

    grey = np.random.default_rng(0).integers(100, 200, (1024, 1024)).astype(np.uint8)
    tifffile.imwrite(path, grey, tile=(256, 256), resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                     photometric="minisblack")  # OpenSlide reads it as generic-tiff, 0.5 µm/px
    return path


def _fluorescence_ome_tiff(path):
    import tifffile

    rgb = np.full((1024, 1024, 3), 230, np.uint8)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", metadata={
        "axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
        "Channel": {"Name": ["DAPI"], "IlluminationType": ["Epifluorescence"], "EmissionWavelength": [455]}})
    return path


def _epifluorescence_dicom(folder):
    import pydicom
    from pydicom.dataset import Dataset

    files = write_dicom_wsi(folder, square_slide_image(), 0.5, "rgb")
    for f in files:
        ds = pydicom.dcmread(f)
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "111743", "DCM", "Epifluorescence illumination"
        ds.OpticalPathSequence[0].IlluminationTypeCodeSequence = [code]
        ds.OpticalPathSequence[0].IlluminationWaveLength = 387
        ds.save_as(f)
    return folder


@pytest.mark.parametrize("make, words", [
    (lambda d: _grey_tiff(d / "grey.tif"), ("grey image", "1 sample(s) per pixel", "MINISBLACK")),
    (lambda d: _fluorescence_ome_tiff(d / "fluo.ome.tif"), ("fluorescence", "DAPI", "Epifluorescence", "455")),
    (lambda d: _epifluorescence_dicom(d / "series"), ("Epifluorescence illumination", "387 nm")),
], ids=["grey-tiff", "fluorescence-ome-tiff", "epifluorescence-dicom"])
def test_generated_non_brightfield_slides_are_refused_unless_forced(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(NonBrightfieldError) as err:
        open_slide(path)
    message = err.value.cli_message()
    assert message.startswith(f"{path}: ") and "--allow-non-brightfield" in message
    for word in words:
        assert word in message, message
    with open_slide(path, allow_non_brightfield=True) as slide:
        assert slide.read(5.0).shape[2] == 3
        assert any(w.startswith("not H&E brightfield: ") for w in slide.warnings)


def test_brightfield_slides_are_not_refused(tmp_path):
    make_square_slide(tmp_path / "he.tiff")
    write_dicom_wsi(tmp_path / "he-series", square_slide_image(), 0.5, "ycbcr")
    for path in (tmp_path / "he.tiff", tmp_path / "he-series"):
        with open_slide(path) as slide:
            assert not any("brightfield" in w for w in slide.warnings)


def test_reasons_read_from_each_kind_of_metadata():
    from pydicom.dataset import Dataset

    assert ndpi_reason({"Fluorescence": "DAPI 2 (387)", "Wavelength": 455.0}) == (
        "it is a fluorescence scan (Hamamatsu NDPI fluorescence channel 'DAPI 2 (387)', emission 455 nm)")
    assert ndpi_reason({"Magnification": 40.0}) is None  # a brightfield NDPI has no fluorescence channel
    mono = Dataset()
    mono.PhotometricInterpretation, mono.SamplesPerPixel = "MONOCHROME2", 1
    assert "MONOCHROME2" in dicom_reason(mono) and "SamplesPerPixel 1" in dicom_reason(mono)
    rgb = Dataset()
    rgb.PhotometricInterpretation, rgb.SamplesPerPixel = "YBR_FULL_422", 3
    assert dicom_reason(rgb) is None
    qpi = ('<?xml version="1.0" encoding="utf-16"?><PerkinElmer-QPI-ImageDescription><ImageType>{}</ImageType>'
           '<Name>{}</Name></PerkinElmer-QPI-ImageDescription>')
    assert "channels DAPI, FITC" in qptiff_reason([qpi.format("FullResolution", "DAPI"),
                                                   qpi.format("FullResolution", "FITC"),
                                                   qpi.format("Thumbnail", "")], [1, 1, 3])
    assert qptiff_reason([qpi.format("FullResolution", "")], [3]) is None  # a brightfield (RGB) QPTIFF
    two = ('<OME><Image><Pixels><Channel Name="CD8" SamplesPerPixel="1"/><Channel Name="PD-L1" SamplesPerPixel="1"/>'
           '</Pixels></Image></OME>')
    assert "2 grey channels (CD8, PD-L1)" in ome_reason(two)
    assert ome_reason('<OME><Image><Pixels><Channel SamplesPerPixel="3"/></Pixels></Image></OME>') is None
    assert "leica.illumination-source = fluorescence" in properties_reason({"leica.illumination-source": "fluorescence"})
    assert properties_reason({"leica.illumination-source": "brightfield"}) is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_segments_a_fluorescence_slide_when_forced(tmp_path):
    """`tseg-rt run --allow-non-brightfield` segments it, saying so in its summary (the refusal
    without the flag, in a batch that goes on: test_corpus.py's run over the real files)."""
    fluo = _fluorescence_ome_tiff(tmp_path / "fluo.ome.tif")
    model = make_colour_model(tmp_path / "m.onnx")  # small tiles: fast on a CPU
    forced = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "run", "--no-progress", "--engine", str(model),
                             str(fluo), "--allow-non-brightfield", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    summary = json.loads(next((tmp_path / "out").glob("*/summary.json")).read_text())
    assert summary["settings"]["allow_non_brightfield"] is True
    assert any(w.startswith("not H&E brightfield: it is a fluorescence image") for w in summary["warnings"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dicomweb_series_with_epifluorescence_illumination_is_refused_unless_forced(orthanc, tmp_path):
    import pydicom

    files = sorted(_epifluorescence_dicom(tmp_path / "series").glob("*.dcm"))
    orthanc.store_files(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    url = orthanc.series_url(first.StudyInstanceUID, first.SeriesInstanceUID)
    with pytest.raises(NonBrightfieldError, match="Epifluorescence illumination, 387 nm"):
        open_slide(url)
    with open_slide(url, allow_non_brightfield=True) as slide:
        assert any(w.startswith("not H&E brightfield: ") for w in slide.warnings)
