"""Area resampling: the exact geometry of the paper's INTER_AREA reads, at OpenCV's speed.

Expected values come from the definition (pixel ``j`` averages the source over
``[start + j * ratio, start + (j + 1) * ratio)``), written here as a brute-force loop, and
from ``cv2.resize(INTER_AREA)`` where the paper's one-shot resize applies.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import textured_rgb
from tseg.runtime.wsi.resample import area_resample, area_resample_reference


def brute_force(src: np.ndarray, out_size, ratio, offset) -> np.ndarray:
    """Float64 area average by the definition, one output pixel at a time (tiny images only)."""
    out_w, out_h = out_size
    h, w = src.shape[:2]

    def weights(n, start, r, count):
        m = np.zeros((count, n))
        for j in range(count):
            a, b = min(max(start + j * r, 0.0), n), min(max(start + (j + 1) * r, 0.0), n)
            for k in range(int(np.floor(a)), int(np.ceil(b))):
                m[j, k] = max(0.0, min(b, k + 1) - max(a, k)) / (b - a)
        return m

    wy, wx = weights(h, offset[1], ratio[1], out_h), weights(w, offset[0], ratio[0], out_w)
    out = np.einsum("ik,jl,kl...->ij...", wy, wx, src.astype(np.float64))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


CASES = [
    # ratio x, ratio y, offset x, offset y: real scanners (0.499 and 0.2527 µm/px to 1 µm/px),
    # a fractional block start, a level a hair coarser than the target (ratio < 1), anisotropy.
    (1 / 0.499, 1 / 0.499, 0.0, 0.0),
    (1 / 0.2527, 1 / 0.2527, 0.37, 0.81),
    (4.0, 4.0, 0.5, 0.25),
    (3.0, 2.5, 1.2, 0.0),
    (0.99997, 0.99997, 0.0, 0.0),
    (1.0 / 0.9893, 1.0 / 0.9893, 0.3, 0.6),
]


@pytest.mark.parametrize("rx,ry,ox,oy", CASES)
def test_matches_the_definition(rx, ry, ox, oy):
    src = textured_rgb(61, 83, seed=int(rx * 100))
    out_w = int((83 - ox) / rx) - (1 if rx < 1 else 0)
    out_h = int((61 - oy) / ry) - (1 if ry < 1 else 0)
    expected = brute_force(src, (out_w, out_h), (rx, ry), (ox, oy))
    got = area_resample(src, (out_w, out_h), (rx, ry), (ox, oy))
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(area_resample_reference(src, (out_w, out_h), (rx, ry), (ox, oy)), expected)
    # Single-channel images too.
    grey = src[..., 1]
    assert np.abs(area_resample(grey, (out_w, out_h), (rx, ry), (ox, oy)).astype(int)
                  - brute_force(grey, (out_w, out_h), (rx, ry), (ox, oy))).max() <= 1


def test_whole_image_equals_opencv_inter_area():
    src = textured_rgb(1300, 1300, seed=4)
    # 10/3 source px per output px over the whole image: cv2.resize(INTER_AREA) is the paper's read.
    expected = cv2.resize(src, (390, 390), interpolation=cv2.INTER_AREA)
    assert np.abs(area_resample(src, (390, 390), (10 / 3, 10 / 3)).astype(int) - expected).max() <= 1
    # Whole factors with whole block edges go to OpenCV itself: identical.
    np.testing.assert_array_equal(area_resample(src, (325, 325), (4.0, 4.0)),
                                  cv2.resize(src, (325, 325), interpolation=cv2.INTER_AREA))


def test_large_block_agrees_with_the_exact_result():
    # A 2048² block at the Aperio 40x ratio with a fractional start, as the reader resamples it.
    src = textured_rgb(2048, 2048, seed=9)
    r = 1 / 0.2527
    size = (int((2048 - 0.4) / r), int((2048 - 0.9) / r))
    got = area_resample(src, size, (r, r), (0.4, 0.9))
    exact = area_resample_reference(src, size, (r, r), (0.4, 0.9))
    diff = np.abs(got.astype(int) - exact)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-4 * diff.size


def test_blocks_assemble_into_the_one_shot_result():
    src = textured_rgb(400, 500, seed=2)
    r = 1 / 0.499
    w, h = int(500 / r), int(400 / r)
    whole = area_resample(src, (w, h), (r, r))
    out = np.empty_like(whole)
    for by in range(0, h, 37):
        for bx in range(0, w, 53):
            cw, ch = min(53, w - bx), min(37, h - by)
            x0, y0 = int(np.floor(bx * r)), int(np.floor(by * r))
            x1, y1 = min(500, int(np.ceil((bx + cw) * r))), min(400, int(np.ceil((by + ch) * r)))
            out[by : by + ch, bx : bx + cw] = area_resample(src[y0:y1, x0:x1], (cw, ch), (r, r),
                                                            (bx * r - x0, by * r - y0))
    assert np.abs(out.astype(int) - whole).max() <= 1
