"""The corpus of real scanner files (../shared/slides, MANIFEST.md): each file's expected outcome.

H&E brightfield files give a result; fluorescence and multiplex files are refused with the reason
read from their metadata (unless forced); formats and pixel types tseg-rt cannot read are refused
with one line saying what to convert them with. The files are used in place, never copied."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import shared_corpus_dir
from tseg.runtime.errors import ImplausibleMppError, NonBrightfieldError, UnsupportedSlideError
from tseg.runtime.wsi.slide import describe_slide, open_slide

SVS = "svs/CMU-1-Small-Region.svs"
SVS_16 = "svs/small-16x16.svs"
NDPI = "ndpi/test3-DAPI-2-387.ndpi"
VSI = "vsi/vsi-ets-test-jpg2k/vsi-ets-test-jpg2k.vsi"
ETS = "vsi/vsi-ets-test-jpg2k/_vsi-ets-test-jpg2k_/stack1/frame_t_0.ets"
QPTIFF = "qptiff/small_vectra.qptiff"
GOOGLE = "dicom/google-camelyon-jpeg2000/multi_frame_jpeg2000_camelyon_challenge_image.dcm"
PIXELMED = "dicom/pixelmed-boxes"  # a two-instance series: the folder is the slide
GOOGLE_SERIES = "dicom/google-camelyon-jpeg2000"  # a batch names a file alone in its folder by the folder
CZI = "czi/1_tileregion.czi"

#: H&E brightfield: (vendor, level-0 µm/px, level-0 size) as MANIFEST.md lists them.
HE = {SVS: ("aperio", 0.499, (2220, 2967)), SVS_16: ("aperio", 0.499, (16, 16)),
      PIXELMED: ("dicom", 0.499, (16, 16))}
#: Not brightfield: words the refusal must contain (the reason as the metadata gives it).
NOT_BRIGHTFIELD = {NDPI: ("fluorescence", "DAPI 2 (387)", "455 nm"),
                   QPTIFF: ("fluorescence", "DAPI", "FITC", "Cy3")}
#: Not readable: words the one-line refusal must contain (what it is; what to convert it with).
UNREADABLE = {VSI: ("Olympus", ".ets", "bfconvert", "OME-TIFF"),
              ETS: ("Olympus", ".ets", "bfconvert", "OME-TIFF"),
              CZI: ("Zeiss CZI", "16-bit grey", "bfconvert", "OME-TIFF")}


#: The instances of the PixelMed series, each given alone: read as their series.
PIXELMED_FILES = {f"{PIXELMED}/boxes_0.dcm": HE[PIXELMED], f"{PIXELMED}/boxes_1.dcm": HE[PIXELMED]}


@pytest.fixture(scope="module")
def corpus() -> Path:
    return shared_corpus_dir()


@pytest.mark.parametrize("name", sorted({**HE, **PIXELMED_FILES}))
def test_he_files_are_described_with_their_resolution(corpus, name):
    vendor, mpp, size = {**HE, **PIXELMED_FILES}[name]
    data = describe_slide(corpus / name)
    assert data["vendor"] == vendor
    assert data["mpp"] == pytest.approx([mpp, mpp], rel=1e-3)
    assert tuple(data["dimensions"]) == size


@pytest.mark.parametrize("name", sorted(NOT_BRIGHTFIELD))
def test_fluorescence_files_are_refused_with_the_reason_from_their_metadata(corpus, name):
    with pytest.raises(NonBrightfieldError) as err:
        open_slide(corpus / name)
    message = err.value.cli_message()
    assert str(corpus / name) in message and "\n" not in message
    for word in NOT_BRIGHTFIELD[name]:
        assert word in message, message
    assert "H&E brightfield" in message and "--allow-non-brightfield" in message
    assert "allow_non_brightfield=True" in str(err.value)  # the fix in the API's terms
    with pytest.raises(NonBrightfieldError):  # `info` says the same instead of describing it as a slide
        describe_slide(corpus / name)


def test_the_fluorescence_ndpi_is_read_when_forced(corpus):
    with open_slide(corpus / NDPI, allow_non_brightfield=True) as slide:
        assert slide.dimensions == (3968, 4864)
        assert slide.mpp == pytest.approx((0.22818, 0.22818), rel=1e-4)
        assert any("fluorescence" in w for w in slide.warnings)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_formats_are_refused_with_what_to_convert_them_with(corpus, name):
    with pytest.raises(UnsupportedSlideError) as err:
        open_slide(corpus / name, allow_non_brightfield=True)
    message = err.value.cli_message()
    assert message.startswith(f"{corpus / name}: ") and "\n" not in message
    for word in UNREADABLE[name]:
        assert word in message, message
    assert "--mpp" not in message and "Is the file complete" not in message


def test_a_dicom_of_one_low_resolution_level_is_refused_in_the_users_terms(corpus):
    with pytest.raises(ImplausibleMppError) as err:
        open_slide(corpus / GOOGLE)
    message = err.value.cli_message()
    assert str(corpus / GOOGLE) in message
    assert "28.97" in message and "1 µm/px" in message and "full-resolution" in message
    assert "probably wrong" not in message
    data = describe_slide(corpus / GOOGLE)  # `info` still describes it, with the problem stated
    assert data["dimensions"] == [1696, 812] and "28.97" in data["resolution"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_corpus_file_ends_in_a_result_or_a_refusal(corpus, tmp_path):
    """One `tseg-rt run` over the whole corpus with the bundled model: the H&E files finish with a
    result folder, every other file fails alone with its reason, and the batch goes on."""
    slides = sorted({*HE, *NOT_BRIGHTFIELD, *UNREADABLE, GOOGLE_SERIES})
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "run", *(str(corpus / s) for s in slides),
                          "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert f"{len(slides) - len(HE)} of {len(slides)} slide(s) not processed" in run.stderr
    with open(out / "cohort.csv", newline="") as fh:
        rows = {Path(r["slide"]).resolve(): r for r in csv.DictReader(fh)}
    for name in slides:
        row = rows[(corpus / name).resolve()]
        if name in HE:
            assert row["status"] == "done", row
            summary = json.loads((out / row["folder"] / "summary.json").read_text())
            assert summary["slide"]["mpp_level0"] == pytest.approx([0.499, 0.499], rel=1e-3)
            assert (out / row["folder"] / "mask.png").is_file()
        else:
            assert row["status"] == "failed", row
            assert row["failure_reason"].startswith(str(corpus / name)), row
    forced = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "info", "--json", str(corpus / SVS)],
                            capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["mpp"] == pytest.approx([0.499, 0.499], rel=1e-3)


def test_the_forced_qptiff_says_its_grey_channels_cannot_be_read(corpus):
    """Forcing does not make grey channel images readable: one line says why and what to do."""
    with pytest.raises(UnsupportedSlideError) as err:
        open_slide(corpus / QPTIFF, allow_non_brightfield=True)
    message = err.value.cli_message()
    assert message.startswith(f"{corpus / QPTIFF}: ") and "\n" not in message
    assert "grey" in message and "8-bit RGB" in message and "bfconvert" in message
    assert "Is the file complete" not in message


def test_a_low_resolution_picture_and_a_default_dpi_are_told_apart(tmp_path):
    """Generated companions of the 29 µm/px DICOM: a 30 µm/px picture of a slide's size is a
    low-resolution picture; 96 dpi (264.58 µm/px, as the corpus's .vsi overview has) is image
    software's default, i.e. missing metadata."""
    import numpy as np

    from tseg.runtime.outputs.pyramid_tiff import write_pyramid

    img = np.full((400, 600, 3), 230, np.uint8)
    with pytest.raises(ImplausibleMppError, match="low-resolution picture of the slide") as err:
        open_slide(write_pyramid(tmp_path / "coarse.tiff", [img], 30.0))
    assert "18 x 12 mm" in err.value.cli_message()
    with pytest.raises(ImplausibleMppError, match="probably wrong \\(it is the 96 dpi default of image software\\)"):
        open_slide(write_pyramid(tmp_path / "dpi.tiff", [img], 25400.0 / 96))
