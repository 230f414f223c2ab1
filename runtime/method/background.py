"""Background segmentation of H&E overview images at 5 µm/px (paper, *Background segmentation*).

Steps, with the paper's numbers:

1. Canny edges on the colour image (OpenCV, 3x3 Sobel, hysteresis thresholds 10 and 50);
2. morphological closing with a 9x9 square, then background regions smaller than 10,000 px
   are filled (0.5 x 0.5 mm² at 5 µm/px);
3. morphological opening with the same 9x9 square, then foreground regions smaller than
   1,600 px are removed (0.2 x 0.2 mm²).

Steps 2-3 are :func:`clean_mask`, which post-processing reuses. Regions are 4-connected
(scikit-image's default connectivity for ``remove_small_holes``/``remove_small_objects``, and the
paper's region definition). "Smaller than" is strict: a region of exactly 10,000 (1,600) px stays.

Decision where the paper is silent: a *hole* is a connected background region that does not
touch the image border. scikit-image's ``remove_small_holes`` also fills small background regions
that touch the border; on a whole slide these are slivers of glass at the edge and it hardly
matters, but on a small crop or biopsy fragment (what embedding software sends) the glass around
the tissue, and for an empty image the whole image, is below 10,000 px and would become tissue
and then tumour. Background at the border is therefore never filled, whatever its size.
"""

from __future__ import annotations

import cv2
import numpy as np

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.method.tiling import Tile

CANNY_LOW = 10
CANNY_HIGH = 50
SOBEL_APERTURE = 3
STRUCTURE_SIZE = 9
MIN_HOLE_AREA = 10_000
MIN_OBJECT_AREA = 1_600


def remove_small_regions(mask: np.ndarray, min_area: int, connectivity: int = 4) -> np.ndarray:
    """Drop foreground regions with fewer than ``min_area`` pixels (strictly fewer)."""
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1 or not mask.any():
        return mask.copy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def fill_small_holes(mask: np.ndarray, min_area: int, connectivity: int = 4) -> np.ndarray:
    """Fill holes with fewer than ``min_area`` pixels (strictly fewer).

    A hole is a connected background region that does not touch the image border (see the
    module docstring): background at the border stays background, whatever its size.
    """
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1 or mask.all() or not mask.any():
        return mask.copy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (~mask).view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
    )
    fill = stats[:, cv2.CC_STAT_AREA] < min_area
    fill[0] = False
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    fill[np.unique(border)] = False
    return mask | fill[labels]


def _square(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))


def clean_mask(
    mask: np.ndarray,
    min_hole_area: int = MIN_HOLE_AREA,
    min_object_area: int = MIN_OBJECT_AREA,
    structure_size: int = STRUCTURE_SIZE,
) -> np.ndarray:
    """Close, fill small holes, open, remove small objects (steps 2-3 above)."""
    kernel = _square(structure_size)
    m = np.asarray(mask, dtype=bool).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    m = fill_small_holes(m.astype(bool), min_hole_area)
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return remove_small_regions(m.astype(bool), min_object_area)


def foreground_mask(rgb_5mpp: np.ndarray) -> np.ndarray:
    """Tissue (and other non-glass) pixels of an RGB uint8 overview image at 5 µm/px."""
    rgb = np.asarray(rgb_5mpp)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidArgumentError(
            f"foreground_mask needs an RGB uint8 image (H, W, 3); got {rgb.dtype} {rgb.shape}"
        )
    edges = cv2.Canny(np.ascontiguousarray(rgb), CANNY_LOW, CANNY_HIGH, apertureSize=SOBEL_APERTURE)
    return clean_mask(edges > 0)


def box_on_mask(box: tuple[int, int, int, int], image_size: tuple[int, int],
                mask_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The mask pixels ``(x0, y0, x1, y1)`` a box of the ``image_size = (w, h)`` image covers."""
    x, y, w, h = box
    img_w, img_h = image_size
    mask_h, mask_w = mask_shape
    sx, sy = mask_w / img_w, mask_h / img_h
    x0 = min(mask_w - 1, int(np.floor(x * sx)))
    y0 = min(mask_h - 1, int(np.floor(y * sy)))
    x1 = max(x0 + 1, min(mask_w, int(np.ceil((x + w) * sx))))
    y1 = max(y0 + 1, min(mask_h, int(np.ceil((y + h) * sy))))
    return (x0, y0, x1, y1)


def mask_on_box(mask: np.ndarray, box: tuple[int, int, int, int], image_size: tuple[int, int]) -> np.ndarray:
    """The part of ``mask`` under ``box`` (pixels of an ``image_size = (w, h)`` image of the
    same area), resampled to the box's size with nearest neighbour (pixel centres)."""
    x, y, w, h = box
    img_w, img_h = image_size
    mask_h, mask_w = mask.shape[:2]
    xs = ((x + np.arange(w) + 0.5) * mask_w / img_w).astype(np.int64).clip(0, mask_w - 1)
    ys = ((y + np.arange(h) + 0.5) * mask_h / img_h).astype(np.int64).clip(0, mask_h - 1)
    return mask[np.ix_(ys, xs)]


def tile_foreground_fraction(mask: np.ndarray, tile: Tile | tuple[int, int, int, int],
                             image_size: tuple[int, int]) -> float:
    """Fraction of foreground in the part of ``mask`` (e.g. 5 µm/px) under a tile.

    ``tile`` is a box in pixels of an image of ``image_size = (width, height)`` (e.g. the slide
    at 1 µm/px); the box is mapped onto the mask by the ratio of the two sizes, widened to
    whole mask pixels so that a tile touching any foreground pixel has a fraction above 0.
    """
    box = tile.box if isinstance(tile, Tile) else tile
    x0, y0, x1, y1 = box_on_mask(box, image_size, mask.shape[:2])
    return float(np.count_nonzero(mask[y0:y1, x0:x1])) / float((x1 - x0) * (y1 - y0))
