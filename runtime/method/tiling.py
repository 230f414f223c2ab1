"""Tile plans: where the tiles of a slide start and end (paper, *Tiling*; Protocol Listing 1).

All coordinates here are pixels of the resolution the network sees (1 µm/px by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from tseg.runtime.errors import InvalidArgumentError

#: Inference tiles of the paper: 7680 x 7680 px at 1 µm/px with at least 1024 px overlap.
INFERENCE_TILE = 7680
INFERENCE_MIN_OVERLAP = 1024
#: Training tiles of the paper: 2048 x 2048 px at 1 µm/px, no overlap.
TRAINING_TILE = 2048
TRAINING_MIN_OVERLAP = 0


def tile_starts(length: int, tile: int, min_overlap: int) -> list[int]:
    """Start coordinates of the tiles along one axis (Protocol Listing 1).

    If ``length <= tile`` there is one tile covering ``[0, length)`` (it is then shorter than
    ``tile``). Otherwise there are ``n = ceil((length - min_overlap) / (tile - min_overlap))``
    tiles; tile ``i < n - 1`` starts at ``i * (tile - min_overlap)`` and the last one starts at
    ``length - tile`` so that it is flush with the far edge. Consecutive tiles then overlap by
    exactly ``min_overlap`` pixels, except the last pair, which may overlap more.
    """
    for name, value in (("length", length), ("tile", tile)):
        if int(value) != value or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    if int(min_overlap) != min_overlap or not 0 <= min_overlap < tile:
        raise InvalidArgumentError(
            f"min_overlap must be an integer in [0, tile={tile}), got {min_overlap!r}"
        )
    length, tile, min_overlap = int(length), int(tile), int(min_overlap)
    if length <= tile:
        return [0]
    stride = tile - min_overlap
    count = math.ceil((length - min_overlap) / stride)
    return [i * stride for i in range(count - 1)] + [length - tile]


@dataclass(frozen=True)
class Tile:
    """One tile of a plan: its grid position and its box ``(x, y, width, height)`` in pixels."""

    row: int
    col: int
    x: int
    y: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)

    @property
    def x_end(self) -> int:
        return self.x + self.width

    @property
    def y_end(self) -> int:
        return self.y + self.height

    def overlaps(self, other: "Tile") -> bool:
        """True when the two tiles share at least one pixel."""
        return (
            self.x < other.x_end
            and other.x < self.x_end
            and self.y < other.y_end
            and other.y < self.y_end
        )


@dataclass(frozen=True)
class TilePlan:
    """The tiles covering a ``width`` x ``height`` image, row by row (both axes as Listing 1)."""

    width: int
    height: int
    tile_size: int
    min_overlap: int
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    @property
    def rows(self) -> int:
        return 1 + max(t.row for t in self.tiles)

    @property
    def cols(self) -> int:
        return 1 + max(t.col for t in self.tiles)


def plan_tiles(width: int, height: int, tile_size: int, min_overlap: int) -> TilePlan:
    """The 2-D tile plan: Listing 1 applied to each axis independently, tiles in row-major order."""
    xs = tile_starts(width, tile_size, min_overlap)
    ys = tile_starts(height, tile_size, min_overlap)
    tile_w = min(tile_size, width)
    tile_h = min(tile_size, height)
    tiles = tuple(
        Tile(row=r, col=c, x=x, y=y, width=tile_w, height=tile_h)
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    )
    return TilePlan(int(width), int(height), int(tile_size), int(min_overlap), tiles)


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """The smallest ``(height, width)`` at least as large whose sides are multiples of ``divisor``."""
    if divisor < 1:
        raise InvalidArgumentError(f"divisor must be >= 1, got {divisor!r}")
    return (-(-height // divisor) * divisor, -(-width // divisor) * divisor)


def pad_to_divisor(image: np.ndarray, divisor: int) -> np.ndarray:
    """Zero-pad an image at the bottom and right so both sides divide by ``divisor``.

    The paper (*Method application*, step 2) zero-pads to a multiple of 16; the network's own
    divisor (16 for eca_nfnet_l3 + DeepLabV3+ with output stride 16, derived by
    ``tseg.training.config.ModelConfig.divisor``) travels in the model contract. Crop the network output back with ``output[..., :height, :width]``.
    """
    height, width = image.shape[:2]
    out_h, out_w = padded_size(height, width, divisor)
    if (out_h, out_w) == (height, width):
        return image
    pad = [(0, out_h - height), (0, out_w - width)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="constant", constant_values=0)
