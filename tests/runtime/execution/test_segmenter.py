"""End to end through the embedding API on generated slides with a known answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from shapely.geometry import shape

from helpers import make_colour_model, make_square_slide, real_slide
from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.execution.segmenter import Segmenter
from tseg.runtime.wsi.slide import open_slide


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("m") / "colour.onnx", tile=256, overlap=32)


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_known_square_end_to_end(tmp_path, model, mpp):
    info = make_square_slide(tmp_path / "s.tiff", mpp=mpp)
    result = Segmenter(model).segment_slide(info["path"])
    sx, sy, sw, sh = info["square_level0"]
    # The mask at 5 µm/px is exactly the square ...
    m = result.mask
    assert m.shape == (240, 320)
    assert m[80:160, 120:220].all() and m.sum() == 80 * 100
    # ... so its polygon, in level-0 pixels, is the square.
    assert len(result.geojson["features"]) == 1
    feature = result.geojson["features"][0]
    assert feature["properties"]["classification"]["name"] == "Tumor"
    poly = shape(feature["geometry"])
    assert poly.bounds == pytest.approx((sx, sy, sx + sw, sy + sh))
    assert poly.area == pytest.approx(sw * sh)
    # Areas in mm²: the square is 500 x 400 µm; the tissue 1300 x 1000 µm.
    areas = result.summary["areas"]
    assert areas["tumour_area_mm2"] == pytest.approx(0.2)
    assert areas["tissue_area_mm2"] == pytest.approx(1.3, rel=0.03)
    assert areas["regions"] == 1
    # 1600 x 1200 px at 1 µm/px in tiles of 256 with >= 32 overlap: 7 x 6 tiles.
    assert result.summary["tiles"]["tiles_total"] == 42
    assert result.probability_full.shape == (1200, 1600)


def test_background_tiles_are_skipped(tmp_path, model):
    # Tissue only in the left 800 µm of a 3000 µm wide slide: tiles far right see only glass.
    info = make_square_slide(tmp_path / "s.tiff", width_um=3000, height_um=1000,
                             tissue_um=(100, 100, 700, 800), square_um=(300, 300, 300, 300))
    result = Segmenter(model).segment_slide(info["path"])
    tiles = result.summary["tiles"]
    cols, rows = 14, 5  # ceil((3000-32)/224), ceil((1000-32)/224)
    assert tiles["tiles_total"] == cols * rows
    # Every tile starting right of 1000 µm holds only glass (the mask may grow ~50 µm).
    far = sum(1 for c in range(cols) if min(c * 224, 3000 - 256) >= 1000) * rows
    assert tiles["tiles_skipped_background"] >= far > 0
    assert tiles["tiles_run"] == tiles["tiles_total"] - tiles["tiles_skipped_background"]
    assert result.summary["areas"]["tumour_area_mm2"] == pytest.approx(0.09)


def test_all_background_slide_gives_an_empty_result(tmp_path, model):
    info = make_square_slide(tmp_path / "glass.tiff", tissue_um=None, square_um=(0, 0, 0, 0))
    result = Segmenter(model).segment_slide(info["path"])
    assert not result.mask.any() and result.summary["tiles"]["tiles_run"] == 0
    assert result.summary["areas"]["tumour_fraction_of_tissue"] is None
    assert result.geojson == {"type": "FeatureCollection", "features": []}


def test_slide_smaller_than_one_tile(tmp_path):
    big_tile = make_colour_model(tmp_path / "m.onnx", tile=7680, overlap=1024, divisor=32)
    info = make_square_slide(tmp_path / "s.tiff")
    result = Segmenter(big_tile).segment_slide(info["path"])
    assert result.summary["tiles"]["tiles_total"] == 1
    assert result.summary["areas"]["tumour_area_mm2"] == pytest.approx(0.2)


def test_segment_image_equals_segment_slide(tmp_path, model):
    info = make_square_slide(tmp_path / "s.tiff")
    seg = Segmenter(model)
    from_slide = seg.segment_slide(info["path"])
    with open_slide(info["path"]) as slide:
        rgb = slide.read(1.0)
    from_image = seg.segment_image(rgb)
    np.testing.assert_array_equal(from_image.mask, from_slide.mask)
    np.testing.assert_array_equal(from_image.probability, from_slide.probability)
    # Polygons in input (1 µm/px) pixels: the square at (600, 400) of 500 x 400.
    poly = shape(from_image.geojson["features"][0]["geometry"])
    assert poly.bounds == pytest.approx((600, 400, 1100, 800))
    # A given foreground mask is used (here: nothing is tissue, so nothing is tumour).
    none = seg.segment_image(rgb, foreground=np.zeros(rgb.shape[:2], bool))
    assert not none.mask.any() and none.summary["tiles"]["tiles_run"] == 0
    with pytest.raises(InvalidArgumentError):
        seg.segment_image(rgb, foreground=np.zeros((7, 7), bool))
    with pytest.raises(InvalidArgumentError):
        seg.segment_image(rgb.astype(np.float32))


@pytest.mark.slow
def test_thread_safety_on_different_slides(tmp_path, model):
    paths = [make_square_slide(tmp_path / f"s{i}.tiff", square_um=(300 + 100 * i, 300, 300, 300), seed=i)["path"]
             for i in range(3)]
    seg = Segmenter(model)
    sequential = [seg.segment_slide(p).mask for p in paths]
    with ThreadPoolExecutor(3) as pool:
        parallel = list(pool.map(lambda p: seg.segment_slide(p).mask, paths))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)


def test_thresholds_are_settings(tmp_path):
    graded = make_colour_model(tmp_path / "g.onnx", graded=True)
    info = make_square_slide(tmp_path / "s.tiff")
    # 255 - red: the square is ~175, below the default high threshold 229 -> no tumour.
    assert not Segmenter(graded).segment_slide(info["path"]).mask.any()
    low = Segmenter(graded, low=40, high=100).segment_slide(info["path"])
    assert low.summary["areas"]["tumour_area_mm2"] == pytest.approx(0.2, rel=0.05)
    assert low.summary["settings"]["low"] == 40
    with pytest.raises(TsegError):
        Segmenter(graded, low=100, high=50)


def test_real_cmu_small_region_end_to_end(shared_data, tmp_path):
    path = real_slide(shared_data, "cmu-1-small-region.svs")
    paper_like = make_colour_model(tmp_path / "m.onnx", tile=7680, overlap=1024, divisor=32)
    result = Segmenter(paper_like).segment_slide(path)
    s = result.summary
    assert s["slide"]["vendor"] == "aperio" and s["slide"]["size_at_model_mpp"] == [1107, 1480]
    assert s["tiles"]["tiles_total"] == 1 and s["tiles"]["tiles_run"] == 1
    assert result.mask.shape == result.foreground.shape == (296, 221)
    # A skin section fills a good part of the small region.
    assert 0.2 < result.foreground.mean() < 0.95
    assert 0.5 < s["areas"]["tissue_area_mm2"] < 1.6
