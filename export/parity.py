"""Parity of exported graphs: inputs from real H&E and the comparison statistics.

Inputs are mosaics of the real H&E tiles in ``../shared/data/tiles/kather2016`` (Kather et al.
2016, CC BY 4.0) resized from ~0.5 to 1 µm/px, when present; otherwise synthetic H&E texture
from :mod:`tseg.runtime.evaluation.synthetic` (not uniform noise, which drives a network to a
near-constant output and hides differences).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

KATHER_MPP = 0.495
FP32_MAX_LEVELS = 1
FP32_MAX_FRACTION = 1e-4


def kather_dir() -> Path | None:
    env = os.environ.get("TSEG_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in candidates:
        d = c / "tiles" / "kather2016"
        if d.is_dir() and any(d.rglob("*.tif")):
            return d
    return None


def kather_tiles(directory: Path, classes: Sequence[str] | None = None) -> list[np.ndarray]:
    """The Kather tiles (RGB) at 1 µm/px, sorted by path, optionally only some classes."""
    import cv2

    tiles = []
    for p in sorted(directory.rglob("*.tif")):
        if classes and p.parent.name not in classes:
            continue
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        size = max(1, round(bgr.shape[1] * KATHER_MPP)), max(1, round(bgr.shape[0] * KATHER_MPP))
        tiles.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA))
    return tiles


def mosaic(tiles: Sequence[np.ndarray], height: int, width: int, seed: int = 0) -> np.ndarray:
    """A ``height`` x ``width`` RGB mosaic of randomly chosen and flipped tiles."""
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), np.uint8)
    th, tw = tiles[0].shape[:2]
    for y in range(0, height, th):
        for x in range(0, width, tw):
            t = tiles[int(rng.integers(len(tiles)))]
            t = t[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            h, w = min(th, height - y), min(tw, width - x)
            out[y : y + h, x : x + w] = t[:h, :w]
    return out


def parity_inputs(sizes: Sequence[tuple[int, int]], seed: int = 0) -> tuple[list[np.ndarray], str]:
    """One RGB image per ``(height, width)``; and where they came from."""
    d = kather_dir()
    if d is not None:
        tiles = kather_tiles(d)
        if tiles:
            return [mosaic(tiles, h, w, seed + i) for i, (h, w) in enumerate(sizes)], f"kather2016 mosaics ({d})"
    from tseg.runtime.evaluation.synthetic import SyntheticSlide

    syn = SyntheticSlide(seed=seed + 11, width_um=3000, height_um=2000, n_tumours=2)
    images = []
    for i, (h, w) in enumerate(sizes):
        # Centre of the tissue section, which holds tumour and normal tissue.
        cx, cy = syn.width_um / 2 - w / 2 + 40 * i, syn.height_um / 2 - h / 2
        images.append(syn.render(cx, cy, w, h, 1.0))
    return images, "synthetic H&E texture (shared data absent)"


@dataclass(frozen=True)
class Agreement:
    """How two uint8 outputs differ."""

    pixels: int
    max_level_difference: int
    fraction_differing: float
    fraction_differing_by_more_than_1: float
    mean_absolute_difference: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Agreement:
    """Statistics over all pixels of all pairs."""
    diffs = [np.abs(x.astype(np.int16) - y.astype(np.int16)).ravel() for x, y in zip(a, b)]
    d = np.concatenate(diffs)
    return Agreement(int(d.size), int(d.max(initial=0)), float(np.count_nonzero(d)) / d.size,
                     float(np.count_nonzero(d > 1)) / d.size, float(d.mean()))


def fp32_parity_ok(a: Agreement) -> bool:
    """The export gate: no pixel more than 1 level off and at most 1e-4 of pixels differing."""
    return a.max_level_difference <= FP32_MAX_LEVELS and a.fraction_differing <= FP32_MAX_FRACTION
