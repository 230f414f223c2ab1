"""Deep Zoom geometry as pure functions (the format OpenSeadragon and most web viewers read).

The conventions are openslide-python's ``DeepZoomGenerator`` (``limit_bounds=False``): level
``count - 1`` is the image at full size, each lower level is the one above halved with the size
rounded up, down to 1 x 1 px; level ``l`` is ``2 ** (count - 1 - l)`` times smaller than level 0;
tiles are ``tile_size`` px plus ``overlap`` px on every side that has a neighbour. Every layer of
the viewer (slide, probability, masks) uses the slide's level-0 geometry, so the layers align by
construction in any Deep Zoom viewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"


class TileOutOfRange(LookupError):
    """A Deep Zoom level or tile address outside the image."""


def level_dimensions(width: int, height: int) -> list[tuple[int, int]]:
    """``(width, height)`` of every Deep Zoom level, level 0 (1 x 1 px) first."""
    size = (max(1, int(width)), max(1, int(height)))
    sizes = [size]
    while size[0] > 1 or size[1] > 1:
        size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
        sizes.append(size)
    return list(reversed(sizes))


@dataclass(frozen=True)
class DeepZoom:
    """The Deep Zoom pyramid of a ``width`` x ``height`` px image."""

    width: int
    height: int
    tile_size: int = 254
    overlap: int = 1
    format: str = "jpeg"

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return level_dimensions(self.width, self.height)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_tiles(self) -> list[tuple[int, int]]:
        """``(columns, rows)`` of every level."""
        return [(math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)) for w, h in self.level_dimensions]

    def downsample(self, level: int) -> int:
        """Level-0 pixels per pixel of ``level``."""
        return 2 ** (self.level_count - 1 - level)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of a tile in its level's pixels, overlap included."""
        if not 0 <= level < self.level_count:
            raise TileOutOfRange(f"level {level} is outside 0..{self.level_count - 1}")
        cols, rows = self.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileOutOfRange(f"tile {col}_{row} is outside level {level}'s {cols} x {rows} tiles")
        lw, lh = self.level_dimensions[level]
        box = []
        for t, count, lim in ((col, cols, lw), (row, rows, lh)):
            before = self.overlap if t != 0 else 0
            after = self.overlap if t != count - 1 else 0
            start = self.tile_size * t
            box.append((start - before, min(self.tile_size, lim - start) + before + after))
        return box[0][0], box[1][0], box[0][1], box[1][1]

    def level0_box(self, level: int, col: int, row: int) -> tuple[float, float, float, float]:
        """The tile's area in level-0 pixels ``(x0, y0, x1, y1)``, clipped to the image."""
        x, y, w, h = self.tile_box(level, col, row)
        d = self.downsample(level)
        return (float(x * d), float(y * d), float(min((x + w) * d, self.width)), float(min((y + h) * d, self.height)))

    def dzi(self) -> str:
        """The ``.dzi`` XML: tile size, overlap, format and size, as ``DeepZoomGenerator.get_dzi``."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns={quoteattr(DZI_NAMESPACE)} '
                f'Format={quoteattr(self.format)} Overlap="{self.overlap}" TileSize="{self.tile_size}">'
                f'<Size Height="{self.height}" Width="{self.width}"/></Image>')
