"""DICOM whole-slide images: series discovery, reading through OpenSlide, the YCbCr mislabel."""

from __future__ import annotations

import io

import numpy as np
import pytest

from dicomwsi import square_slide_image, write_dicom_wsi
from tseg.runtime.cohort.slide_lists import find_slides
from tseg.runtime.wsi.dicom_source import first_fragment, frame_colour_space, group_series, ycbcr_to_rgb
from tseg.runtime.errors import UnsupportedSlideError
from tseg.runtime.wsi.slide import describe_slide, open_slide


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    img = square_slide_image()
    for colour in ("ycbcr", "mislabelled", "rgb"):
        write_dicom_wsi(root / colour, img, 0.5, colour)
    return root, img


def _jpeg(pil_kwargs):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(buf, "JPEG", **pil_kwargs)
    return buf.getvalue()


def test_frame_colour_space_follows_libjpeg():
    assert frame_colour_space(_jpeg({})) == "YCbCr"  # JFIF marker
    assert frame_colour_space(_jpeg({"keep_rgb": True})) == "RGB"  # Adobe APP14, transform 0
    assert frame_colour_space(b"not a jpeg") is None
    # No JFIF / Adobe marker: component ids 'R', 'G', 'B' mean RGB; subsampled chroma means YCbCr;
    # ids 1, 2, 3 without subsampling are ambiguous (the DICOM label is then trusted).
    def sof(ids, sampling):
        comps = b"".join(bytes([i, s, 0]) for i, s in zip(ids, sampling))
        body = bytes([8, 0, 16, 0, 16, 3]) + comps
        return b"\xff\xd8\xff\xc0" + (len(body) + 2).to_bytes(2, "big") + body + b"\xff\xda\x00\x02"
    assert frame_colour_space(sof((82, 71, 66), (0x11, 0x11, 0x11))) == "RGB"
    assert frame_colour_space(sof((1, 2, 3), (0x22, 0x11, 0x11))) == "YCbCr"
    assert frame_colour_space(sof((1, 2, 3), (0x11, 0x11, 0x11))) is None


def test_ycbcr_to_rgb_inverts_the_jfif_transform():
    rgb = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    import cv2

    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycbcr = ycrcb[..., [0, 2, 1]]
    assert np.abs(ycbcr_to_rgb(ycbcr).astype(int) - rgb).max() <= 2


def test_series_are_grouped_and_named_by_folder(series, tmp_path):
    root, _ = series
    found = find_slides([root])
    assert sorted(p.name for p in found) == ["mislabelled", "rgb", "ycbcr"]
    # Naming every file of a series gives the series once.
    files = sorted((root / "ycbcr").glob("*.dcm"))
    assert len(files) > 2 and find_slides(files) == [root / "ycbcr"]
    # Two series in one folder: each is one slide, named by its first file.
    import shutil

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for colour in ("ycbcr", "rgb"):
        for f in (root / colour).glob("*.dcm"):
            shutil.copy(f, mixed / f"{colour}-{f.name}")
    (mixed / "junk.dcm").write_text("not dicom")
    groups, rejected = group_series(sorted(mixed.glob("*.dcm")))
    assert len(groups) == 2 and not any(g.alone for g in groups)
    assert [r.path.name for r in rejected] == ["junk.dcm"]
    found = find_slides([mixed])
    assert sorted(p.name for p in found) == ["rgb-level-0.dcm", "ycbcr-level-0.dcm"]
    with pytest.raises(UnsupportedSlideError, match="2 DICOM whole-slide series"):
        open_slide(mixed)


@pytest.mark.slow
@pytest.mark.parametrize("colour", ["ycbcr", "mislabelled", "rgb"])
def test_every_form_reads_true_rgb(series, colour):
    root, img = series
    with open_slide(root / colour) as slide:
        assert slide.vendor == "dicom" and slide.mpp == (0.5, 0.5)
        assert len(slide.level_dimensions) >= 3
        pixels = slide.read(0.5)
        assert (slide.colour_correction is not None) == (colour == "mislabelled")
        info = slide.info()
        assert info["colour_correction"] == slide.colour_correction
    diff = np.abs(pixels.astype(int) - img)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8  # JPEG quality 95
    glass = pixels[10:40, 10:40].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(glass - 244) < 3)  # near-white glass, not salmon


def test_dct_scaling_is_a_no_op_on_dicom_series(series):
    """OpenSlide decodes DICOM frames, so the opt-in DCT scaling has nothing to scale: the same
    pixels as without it (it used to fail: the DICOM source lacked ``dct_scales``)."""
    root, _ = series
    with open_slide(root / "rgb") as plain, open_slide(root / "rgb", dct_scaling=True) as scaled:
        assert scaled.read_plan(2.0).scale == 1
        np.testing.assert_array_equal(scaled.read(2.0), plain.read(2.0))


def test_openslide_returns_ycbcr_for_the_mislabelled_form(series):
    """The bug this guards against: OpenSlide itself returns the YCbCr samples."""
    import openslide

    root, _ = series
    with openslide.OpenSlide(str(sorted((root / "mislabelled").glob("*.dcm"))[0])) as raw:
        glass = np.asarray(raw.read_region((10, 10), 0, (20, 20)))[..., :3].reshape(-1, 3).mean(axis=0)
    assert glass[1] < 140 and glass[2] < 140  # Cb, Cr near 128: "salmon and teal"
    frame = first_fragment(sorted((root / "mislabelled").glob("*.dcm"))[0])
    assert frame is not None and frame_colour_space(frame) == "YCbCr"


def test_describe_a_dicom_series(series):
    root, _ = series
    info = describe_slide(root / "mislabelled")
    assert info["vendor"] == "dicom" and "YCbCr" in info["colour_correction"]
    assert any("colours corrected" in w for w in info["warnings"])


@pytest.mark.parametrize("change, words", [
    ("long_uid", "Series Instance UID (0020,000E) is 65 characters long; a DICOM UID has at most 64"),
    ("no_image_type", "Image Type (0008,0008) is missing"),
])
def test_a_non_conformant_attribute_is_named_not_left_to_openslide(tmp_path, change, words):
    """Issue 29, defect 9: the attribute that is wrong, and the fix; not "Couldn't get image flavor"."""
    import pydicom
    from pydicom import config

    files = write_dicom_wsi(tmp_path / "s", square_slide_image(800, 600, 2.0), 2.0)
    with config.disable_value_validation():  # writing a file as a non-conformant converter does
        for f in files:
            ds = pydicom.dcmread(str(f))
            if change == "long_uid":
                ds.SeriesInstanceUID = "1." + "2" * 63
            elif f == files[-1]:
                del ds.ImageType
            ds.save_as(str(f))
    with pytest.raises(UnsupportedSlideError) as refused:
        open_slide(tmp_path / "s")
    text = str(refused.value)
    assert words in text and "dcmodify" in text and "flavor" not in text
