"""From the merged probability map to a tumour mask (paper, *Result post-processing*).

1. the 1 µm/px probability map is shrunk to the 5 µm/px overview size (INTER_AREA);
2. smoothing: resize by ``max(0.2, sqrt(1e6 / (h * w)))`` (new size floored), median blur with
   aperture 9, Gaussian blur 5x5, resize back to the 5 µm/px size;
3. hysteresis threshold, low 85 and high 229 by default (thresholds are options: the paper's
   fragmented bladder samples did better with 5%/10%);
4. pruning: a connected region is kept only if the 95th percentile of the smoothed map inside
   it is above the high threshold;
5. AND with the background-segmentation foreground mask, then close + fill holes < 10,000 px,
   open + remove objects < 1,600 px (:func:`tseg.runtime.method.background.clean_mask`).

Decisions where the paper is silent (written down here, as the developers' guide asks):

* comparisons are strict (``> low``, ``> high``, ``p95 > high``), as in scikit-image's
  ``apply_hysteresis_threshold`` and the paper's "greater than 229";
* regions are 4-connected throughout, as in the paper's region analysis;
* the smoothing resizes use INTER_AREA when shrinking and INTER_LINEAR when enlarging (both the
  way back up and the "area < 1e6" safeguard, which enlarges very small maps);
* the 95th percentile is numpy's default (linear interpolation between order statistics),
  computed exactly from per-region histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tseg.runtime.method.background import clean_mask
from tseg.runtime.errors import InvalidArgumentError

DEFAULT_LOW = 85  # 1/3 of 255
DEFAULT_HIGH = 229  # ~90% of 255
SMOOTHING_FACTOR = 0.2
SMOOTHING_MIN_AREA = 1_000_000
MEDIAN_APERTURE = 9
GAUSSIAN_KERNEL = (5, 5)
PRUNE_PERCENTILE = 95.0


def _check_u8_2d(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise InvalidArgumentError(f"{name} must be a 2-D uint8 array, got {image.dtype} {image.shape}")
    return image


def check_thresholds(low: int, high: int) -> None:
    if not (0 <= low < high <= 255):
        raise InvalidArgumentError(
            f"thresholds must satisfy 0 <= low < high <= 255 (8-bit levels), got low={low}, high={high}"
        )


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size = (width, height)`` with INTER_AREA (step 1)."""
    w, h = size
    if image.shape[1] == w and image.shape[0] == h:
        return image.copy()
    return cv2.resize(image, (int(w), int(h)), interpolation=cv2.INTER_AREA)


def smoothing_size(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` of the map during smoothing: factor max(0.2, sqrt(1e6/(h*w))), floored."""
    factor = max(SMOOTHING_FACTOR, math.sqrt(SMOOTHING_MIN_AREA / (height * width)))
    return (max(1, math.floor(height * factor)), max(1, math.floor(width * factor)))


def smooth_probability(prob_5mpp: np.ndarray) -> np.ndarray:
    """Step 2: the smoothed uint8 map, same size as the input."""
    prob = _check_u8_2d("prob_5mpp", prob_5mpp)
    h, w = prob.shape
    sh, sw = smoothing_size(h, w)
    shrink = sh * sw <= h * w
    small = cv2.resize(prob, (sw, sh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    small = cv2.medianBlur(small, MEDIAN_APERTURE)
    small = cv2.GaussianBlur(small, GAUSSIAN_KERNEL, 0)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if shrink else cv2.INTER_AREA)


def label_regions(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """4-connected labels: ``(count including background 0, int32 labels)``."""
    count, labels = cv2.connectedComponents(np.asarray(mask, dtype=bool).view(np.uint8),
                                            connectivity=4, ltype=cv2.CV_32S)
    return int(count), labels


def hysteresis_threshold(image: np.ndarray, low: int, high: int) -> np.ndarray:
    """Step 3: pixels ``> low`` in a 4-connected region that has a pixel ``> high``."""
    image = _check_u8_2d("image", image)
    count, labels = label_regions(image > low)
    keep = np.zeros(count, dtype=bool)
    keep[np.unique(labels[image > high])] = True
    keep[0] = False
    return keep[labels]


def region_percentiles(values: np.ndarray, labels: np.ndarray, count: int,
                       q: float = PRUNE_PERCENTILE) -> np.ndarray:
    """``np.percentile(values[labels == k], q)`` for every label ``k`` (uint8 values), exactly."""
    hist = np.bincount(labels.ravel().astype(np.int64) * 256 + values.ravel(),
                       minlength=count * 256).reshape(count, 256)
    n = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    pos = q / 100.0 * np.maximum(n - 1, 0)
    k = np.floor(pos).astype(np.int64)
    frac = pos - k
    k1 = np.minimum(k + 1, np.maximum(n - 1, 0))
    v_k = np.argmax(cum > k[:, None], axis=1)
    v_k1 = np.argmax(cum > k1[:, None], axis=1)
    result = v_k + frac * (v_k1 - v_k)
    result[n == 0] = np.nan
    return result


def prune_regions(mask: np.ndarray, smoothed: np.ndarray, threshold: int,
                  q: float = PRUNE_PERCENTILE) -> np.ndarray:
    """Step 4: keep a region only if its ``q``-th percentile of ``smoothed`` is ``> threshold``."""
    count, labels = label_regions(mask)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    p = region_percentiles(smoothed, labels, count, q)
    keep = p > threshold
    keep[0] = False
    return keep[labels]


def segment_smoothed(smoothed: np.ndarray, foreground: np.ndarray | None = None,
                     low: int = DEFAULT_LOW, high: int = DEFAULT_HIGH,
                     prune: bool = True) -> np.ndarray:
    """Steps 3-5 on an already smoothed map (threshold sweeps share the smoothing)."""
    check_thresholds(low, high)
    smoothed = _check_u8_2d("smoothed", smoothed)
    mask = hysteresis_threshold(smoothed, low, high)
    if prune:
        mask = prune_regions(mask, smoothed, high)
    if foreground is not None:
        foreground = np.asarray(foreground, dtype=bool)
        if foreground.shape != mask.shape:
            raise InvalidArgumentError(
                f"foreground mask shape {foreground.shape} differs from the probability map's {mask.shape}"
            )
        mask &= foreground
    return clean_mask(mask)


def segment_probability(prob_5mpp: np.ndarray, foreground: np.ndarray | None = None,
                        low: int = DEFAULT_LOW, high: int = DEFAULT_HIGH,
                        prune: bool = True) -> np.ndarray:
    """Steps 2-5: the boolean tumour mask of a 5 µm/px uint8 probability map."""
    check_thresholds(low, high)
    return segment_smoothed(smooth_probability(prob_5mpp), foreground, low, high, prune)


@dataclass(frozen=True)
class Postprocessed:
    """The 5 µm/px probability map, its smoothed version and the mask."""

    probability: np.ndarray
    smoothed: np.ndarray
    mask: np.ndarray


def postprocess(prob_1mpp: np.ndarray, overview_size: tuple[int, int],
                foreground: np.ndarray | None = None, low: int = DEFAULT_LOW,
                high: int = DEFAULT_HIGH, prune: bool = True) -> Postprocessed:
    """Steps 1-5 from the merged 1 µm/px map; ``overview_size = (width, height)`` at 5 µm/px."""
    prob = resize_area(_check_u8_2d("prob_1mpp", prob_1mpp), overview_size)
    smoothed = smooth_probability(prob)
    return Postprocessed(prob, smoothed, segment_smoothed(smoothed, foreground, low, high, prune))
