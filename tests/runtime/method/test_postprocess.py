"""Post-processing, from the paper's *Result post-processing* section."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.method.postprocess import (
    hysteresis_threshold,
    postprocess,
    prune_regions,
    region_percentiles,
    segment_probability,
    segment_smoothed,
    smooth_probability,
    smoothing_size,
)


def disc(shape, center, radius, value, base=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, base, np.uint8)
    img[(yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2] = value
    return img


def test_smoothing_size_factor():
    # Large maps shrink by 0.2; small ones are resized to an area of 1e6 (factor floored).
    assert smoothing_size(10_000, 8_000) == (2000, 1600)
    f = math.sqrt(1e6 / (2000 * 3000))
    assert smoothing_size(2000, 3000) == (math.floor(2000 * f), math.floor(3000 * f))
    f = math.sqrt(1e6 / (300 * 400))
    assert smoothing_size(300, 400) == (math.floor(300 * f), math.floor(400 * f))
    assert smoothing_size(300, 400)[0] > 300  # the safeguard enlarges very small maps


def test_smoothing_keeps_size_and_removes_specks():
    prob = disc((600, 800), (300, 400), 120, 240)
    prob[10, 10] = 255  # isolated speck: the median filter removes it
    smoothed = smooth_probability(prob)
    assert smoothed.shape == prob.shape and smoothed.dtype == np.uint8
    assert smoothed[10, 10] < 50
    assert smoothed[300, 400] >= 235


def test_blob_above_high_survives_and_blob_below_high_goes():
    prob = disc((700, 900), (200, 250), 100, 240)
    prob |= disc((700, 900), (450, 650), 100, 220)  # never exceeds 229
    mask = segment_probability(prob)
    assert mask[200, 250] and not mask[450, 650]
    assert abs(int(mask[200].sum()) - 200) < 20  # the blob keeps about its size


def test_hysteresis_strict_thresholds_and_4_connectivity():
    img = np.zeros((7, 7), np.uint8)
    img[1, 1:4] = [230, 86, 86]  # strong pixel with a weak tail
    img[2, 4] = 200  # diagonal to the tail only: not 4-connected, dropped
    img[5, 5] = 229  # equal to high: not strong
    img[5, 1] = 85  # equal to low: not even weak
    out = hysteresis_threshold(img, 85, 229)
    assert out[1, 1:4].all()
    assert not out[2, 4] and not out[5, 5] and not out[5, 1]


def test_region_percentiles_equal_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (50, 60)).astype(np.int32)
    values = rng.integers(0, 256, (50, 60)).astype(np.uint8)
    got = region_percentiles(values, labels, 6, 95)
    for k in range(6):
        assert got[k] == pytest.approx(np.percentile(values[labels == k], 95))


def test_pruning_by_95th_percentile():
    smoothed = np.zeros((40, 40), np.uint8)
    # Region A: 100 pixels, 6 of them at 250, the rest 200 -> p95 = 250 > 229: kept.
    a = np.full(100, 200, np.uint8); a[:6] = 250
    smoothed[0:10, 0:10] = a.reshape(10, 10)
    # Region B: 100 pixels, 5 at 250 -> p95 = 200 + 0.05 * 50 = 202.5 <= 229: pruned.
    b = np.full(100, 200, np.uint8); b[-5:] = 250
    smoothed[20:30, 20:30] = b.reshape(10, 10)
    assert np.percentile(b, 95) <= 229 < np.percentile(a, 95)
    mask = smoothed > 0
    kept = prune_regions(mask, smoothed, 229)
    assert kept[0:10, 0:10].all() and not kept[20:30, 20:30].any()
    # Both regions pass the hysteresis (each has pixels > 229): pruning is what removes B.
    assert hysteresis_threshold(smoothed, 85, 229)[20:30, 20:30].all()


def test_holes_and_specks_at_the_stated_sizes():
    smoothed = np.zeros((700, 700), np.uint8)
    smoothed[20:680, 20:680] = 250
    smoothed[100:199, 100:199] = 0  # 99 x 99 = 9,801 px hole: filled
    smoothed[300:401, 300:401] = 0  # 101 x 101 = 10,201 px hole: kept
    mask = segment_smoothed(smoothed)
    assert mask[150, 150] and not mask[350, 350]
    specks = np.zeros((300, 300), np.uint8)
    specks[10:49, 10:49] = 250  # 39 x 39 = 1,521 px: removed
    specks[100:141, 100:141] = 250  # 41 x 41 = 1,681 px: kept
    mask = segment_smoothed(specks)
    assert not mask[30, 30] and mask[120, 120]


def test_foreground_mask_is_anded():
    prob = disc((600, 600), (300, 300), 150, 250)
    foreground = np.zeros((600, 600), bool)
    foreground[:, :300] = True
    mask = segment_probability(prob, foreground)
    assert mask[300, 250] and not mask[300, 350]


def test_other_thresholds_work():
    prob = disc((600, 600), (300, 300), 120, 60)  # ~24% of 255
    assert not segment_probability(prob).any()
    mask = segment_probability(prob, low=13, high=26)  # ~5% / 10%
    assert mask[300, 300]
    with pytest.raises(InvalidArgumentError):
        segment_probability(prob, low=200, high=100)


def test_pruning_can_be_disabled():
    smoothed = np.zeros((300, 300), np.uint8)
    smoothed[50:150, 50:150] = 200
    smoothed[50, 50:60] = 240  # a few strong pixels: hysteresis keeps the region, p95 prunes it
    assert not segment_smoothed(smoothed).any()
    assert segment_smoothed(smoothed, prune=False)[100, 100]


def test_postprocess_from_1mpp_map():
    prob_1mpp = disc((3000, 2500), (1500, 1250), 700, 245)
    out = postprocess(prob_1mpp, (500, 600))
    assert out.probability.shape == (600, 500) and out.mask.shape == (600, 500)
    assert out.mask[300, 250] and not out.mask[10, 10]
