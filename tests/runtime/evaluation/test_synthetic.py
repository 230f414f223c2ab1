"""The synthetic H&E slide generator: deterministic pyramids with MPP, masks and GeoJSON."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from shapely.geometry import shape

from tseg.runtime.method.background import foreground_mask
from tseg.runtime.wsi.slide import open_slide
from tseg.runtime.evaluation.synthetic import SyntheticSlide, generate_slide

pytestmark = pytest.mark.slow  # each test generates whole pyramidal slides (several seconds)


def test_generated_slide_is_a_pyramid_with_known_tumour(tmp_path):
    g = generate_slide(tmp_path / "a" / "s.tiff", seed=3, width_mm=3.0, height_mm=2.0, mpp=0.5, min_level_size=256)
    with open_slide(g.path) as slide:
        assert slide.vendor == "generic-tiff" and slide.mpp == (0.5, 0.5)
        assert slide.dimensions == (6000, 4000) and len(slide.level_dimensions) >= 2
        overview = slide.overview()
        assert overview.shape == (400, 600, 3)
    mask = cv2.imread(str(g.mask_path), cv2.IMREAD_GRAYSCALE) > 0
    assert mask.shape == (400, 600) and 0.005 < mask.mean() < 0.3
    # Glass is white and edge-free; tissue is found by the paper's background segmentation and
    # contains the tumour.
    fg = foreground_mask(overview)
    assert (fg & mask).sum() / mask.sum() > 0.95
    assert overview[~fg].mean() > 235
    # Tumour looks different: darker (denser, larger, darker nuclei) than the rest of the tissue.
    grey = overview.mean(axis=2)
    assert grey[mask].mean() < grey[fg & ~mask].mean() - 20
    # The GeoJSON polygons, in level-0 pixels, cover the mask's area.
    features = json.loads(g.geojson_path.read_text())["features"]
    area_px = sum(shape(f["geometry"]).area for f in features)
    assert area_px * 0.25 / 1e6 == pytest_approx(mask.sum() * 25 / 1e6, 0.05)
    assert all(f["properties"]["classification"]["name"] == "Tumor" for f in features)


def pytest_approx(value, rel):
    import pytest

    return pytest.approx(value, rel=rel)


def test_deterministic_and_consistent_across_resolutions(tmp_path):
    a = SyntheticSlide(seed=5, width_um=2000, height_um=1500)
    b = SyntheticSlide(seed=5, width_um=2000, height_um=1500)
    np.testing.assert_array_equal(a.render(500, 400, 300, 200, 0.5), b.render(500, 400, 300, 200, 0.5))
    assert not np.array_equal(a.render(500, 400, 300, 200, 0.5),
                              SyntheticSlide(seed=6, width_um=2000, height_um=1500).render(500, 400, 300, 200, 0.5))
    # Blocks rendered separately meet without seams (anti-aliased nucleus edges clipped at a
    # block's border may differ on a few pixels).
    whole = a.render(600, 600, 200, 100, 1.0)
    left = a.render(600, 600, 100, 100, 1.0)
    right = a.render(700, 600, 100, 100, 1.0)
    diff = np.abs(np.concatenate([left, right], axis=1).astype(int) - whole).max(axis=2)
    assert (diff > 2).sum() <= 5 and (diff[:, :99] == 0).all() and (diff[:, 101:] == 0).all()
    # A coarse rendering is a reduction of a fine one.
    fine = a.render(0, 0, 400, 300, 1.0)
    coarse = a.render(0, 0, 80, 60, 5.0)
    assert np.abs(cv2.resize(fine, (80, 60), interpolation=cv2.INTER_AREA).astype(int) - coarse).mean() < 2
    g1 = generate_slide(tmp_path / "x.tiff", seed=9, width_mm=1.0, height_mm=1.0, compression="zlib")
    g2 = generate_slide(tmp_path / "y.tiff", seed=9, width_mm=1.0, height_mm=1.0, compression="zlib")
    assert g1.path.read_bytes() == g2.path.read_bytes()
    assert g1.mask_path.read_bytes() == g2.mask_path.read_bytes()
