"""Background segmentation, from the paper's *Background segmentation* section."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import textured_rgb
from tseg.runtime.method.background import (
    clean_mask,
    fill_small_holes,
    foreground_mask,
    remove_small_regions,
    tile_foreground_fraction,
)
from tseg.runtime.errors import InvalidArgumentError


def test_tissue_on_glass():
    img = np.full((600, 800, 3), 245, np.uint8)  # glass: homogeneous, no edges
    tissue = textured_rgb(600, 800, seed=3)
    yy, xx = np.mgrid[:600, :800]
    inside = (yy - 300) ** 2 + (xx - 300) ** 2 < 200**2
    img[inside] = tissue[inside]
    speck = (slice(50, 80), slice(700, 730))  # 30 x 30 = 900 px of texture: removed
    img[speck] = tissue[speck]
    hole = (slice(280, 320), slice(280, 320))  # 40 x 40 glass hole in tissue: filled
    img[hole] = 245
    mask = foreground_mask(img)
    assert mask.dtype == bool and mask.shape == (600, 800)
    assert mask[300, 300] and mask[300, 150]
    assert not mask[550, 750] and not mask[65, 715]
    assert 0.9 < mask[inside].mean() and mask[~inside].mean() < 0.05


def test_region_size_semantics_are_strict():
    m = np.zeros((100, 100), bool)
    m[0:40, 0:40] = True  # exactly 1,600
    m[50:89, 50:89] = True  # 1,521
    out = remove_small_regions(m, 1600)
    assert out[0:40, 0:40].all() and not out[50:89, 50:89].any()
    holes = np.ones((300, 300), bool)
    holes[10:110, 10:110] = False  # exactly 10,000: kept as a hole
    holes[150:249, 150:249] = False  # 9,801: filled
    out = fill_small_holes(holes, 10_000)
    assert not out[50, 50] and out[200, 200]


def test_regions_are_4_connected():
    m = np.zeros((100, 100), bool)
    m[0:30, 0:30] = True
    m[30:60, 30:60] = True  # touches the first only diagonally: two regions of 900
    assert not remove_small_regions(m, 1000).any()


def test_clean_mask_open_removes_thin_lines():
    m = np.zeros((400, 400), bool)
    m[250:350, 250:350] = True
    m[200, :] = True  # 1 px line: gone after a 9x9 opening
    out = clean_mask(m)
    assert out[300, 300] and not out[200, 20]


def test_background_at_the_border_is_never_a_hole():
    """A hole is a background region that does not touch the border (issue 12, case 1)."""
    m = np.zeros((200, 200), bool)
    m[10:, :] = True  # a 10 x 200 = 2,000 px strip of glass along the top edge: kept
    out = clean_mask(m)
    assert not out[:10].any() and out[20:].all()
    # An empty mask of any size stays empty (it used to become one "filled hole").
    for side in (40, 50, 99, 150):
        assert not clean_mask(np.zeros((side, side), bool)).any()
    # A closed hole of the same area is filled.
    ring = np.ones((200, 200), bool)
    ring[50:60, 20:180] = False
    assert clean_mask(ring).all()


def test_small_crop_keeps_its_glass():
    """A small crop (what embedding software sends): a biopsy fragment surrounded by glass, the
    whole crop under 10,000 px at 5 µm/px. The glass must stay background."""
    img = np.full((90, 110, 3), 243, np.uint8)
    tissue = textured_rgb(90, 110, seed=5)
    img[25:65, 30:80] = tissue[25:65, 30:80]  # 40 x 50 px fragment = 0.2 x 0.25 mm
    mask = foreground_mask(img)
    assert mask[45, 55] and mask[25:65, 30:80].mean() > 0.9
    assert not mask[:15].any() and not mask[:, :20].any() and not mask[80:].any()
    # Plain glass, and a crop with no tissue at all, have no foreground.
    assert not foreground_mask(np.full((60, 60, 3), 250, np.uint8)).any()


def test_tile_fraction_maps_1mpp_boxes_onto_the_5mpp_mask():
    mask = np.zeros((20, 30), bool)
    mask[:, :15] = True
    # A 1 µm/px image of 150 x 100 px; the mask is 5x smaller.
    assert tile_foreground_fraction(mask, (0, 0, 75, 100), (150, 100)) == 1.0
    assert tile_foreground_fraction(mask, (75, 0, 75, 100), (150, 100)) == 0.0
    assert tile_foreground_fraction(mask, (50, 0, 50, 50), (150, 100)) == pytest.approx(0.5)


def test_wrong_input():
    with pytest.raises(InvalidArgumentError):
        foreground_mask(np.zeros((10, 10), np.uint8))


def test_cleaning_equals_scikit_image_semantics():
    """The paper used scikit-image's remove_small_holes / remove_small_objects (areas < 10,000
    and < 1,600 px); our OpenCV implementation must give the same masks, except that background
    touching the image border is never a hole (scikit-image's fill there is undone with
    ``clear_border``)."""
    skm = pytest.importorskip("skimage.morphology")
    from skimage import measure, segmentation
    import cv2

    rng = np.random.default_rng(0)
    for seed in range(3):
        noise = cv2.GaussianBlur(rng.random((400, 500)).astype(np.float32), (0, 0), 6 + 3 * seed)
        m = noise > np.quantile(noise, 0.55)
        kernel = np.ones((9, 9), np.uint8)
        expected = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
        filled = skm.remove_small_holes(expected, max_size=9_999)
        added = measure.label(filled & ~expected, connectivity=1)
        expected = expected | (segmentation.clear_border(added) > 0)
        expected = cv2.morphologyEx(expected.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
        expected = skm.remove_small_objects(expected, max_size=1_599)
        np.testing.assert_array_equal(clean_mask(m), expected)
