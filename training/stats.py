"""Dataset mean and standard deviation per channel (paper, equations (1) and (2)); no PyTorch.

mu = mean over images of the per-image means; sigma^2 = mean over images of the per-image
*unbiased* variances (n_i - 1 in the denominator); sigma = sqrt(sigma^2); both divided by 255.
Each unique image counts once (the paper computes them on the unique tiles).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from tseg.runtime.errors import InvalidArgumentError


def image_moments(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased variance of one uint8 RGB image (in 0-255 units)."""
    x = rgb.reshape(-1, rgb.shape[-1]).astype(np.float64)
    if x.shape[0] < 2:
        raise InvalidArgumentError("an image needs at least 2 pixels for an unbiased variance")
    return x.mean(axis=0), x.var(axis=0, ddof=1)


def dataset_stats_from_moments(moments: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
    means, variances = [], []
    for m, v in moments:
        means.append(m)
        variances.append(v)
    if not means:
        raise InvalidArgumentError("no images to compute statistics from")
    mu = np.mean(means, axis=0) / 255.0
    sigma = np.sqrt(np.mean(variances, axis=0)) / 255.0
    return {"mean": [float(v) for v in mu], "std": [float(v) for v in sigma], "images": len(means)}


def dataset_stats(image_paths: Iterable[str | Path], threads: int = 4) -> dict[str, list[float]]:
    """Equations (1)-(2) over the unique images in ``image_paths`` (RGB order)."""
    unique = sorted({str(p) for p in image_paths})

    def one(path: str) -> tuple[np.ndarray, np.ndarray]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidArgumentError(f"{path}: not a readable image")
        return image_moments(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return dataset_stats_from_moments(pool.map(one, unique))
