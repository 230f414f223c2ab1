"""Slides read by OpenSlide (through ``openslide-bin``, so no system library is needed): the
formats OpenSlide reads (Aperio, Hamamatsu, MIRAX, Philips, Leica, Ventana, generic tiled TIFF...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tseg.runtime.wsi.mpp import openslide_mpp
from tseg.runtime.wsi.base import background_colour, rgba_to_rgb


#: OpenSlide's own decoded-tile cache (32 MiB): a larger tile (a DICOM frame of 16384 px) is not
#: kept, so every 2048 px block that shares it decoded it again.
OPENSLIDE_CACHE_BYTES = 32 * 2**20


def largest_tile(properties: Mapping[str, str], level_dimensions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Bytes of the largest tile OpenSlide decodes (RGBA) and how many tiles its level has, from
    ``openslide.level[N].tile-width/-height`` (256 px where a format does not say)."""
    best = (256 * 256 * 4, 1)
    for i, (w, h) in enumerate(level_dimensions):
        try:
            tw = int(properties.get(f"openslide.level[{i}].tile-width", 256))
            th = int(properties.get(f"openslide.level[{i}].tile-height", 256))
        except ValueError:
            continue
        if tw > 0 and th > 0:
            best = max(best, (tw * th * 4, -(-w // tw) * -(-h // th)))
    return best


def keep_largest_tile(slide: Any, tile_bytes: int) -> None:
    """Give ``slide`` (an ``openslide.OpenSlide``) a cache that holds its largest tile, so the
    blocks that share a tile decode it once (wsi/limits.py counts it)."""
    if tile_bytes <= OPENSLIDE_CACHE_BYTES // 2:
        return
    import openslide

    slide.set_cache(openslide.OpenSlideCache(tile_bytes + OPENSLIDE_CACHE_BYTES))


class OpenSlideSource:
    """A :class:`~tseg.runtime.wsi.base.SlideSource` over ``openslide.OpenSlide``: its levels,
    properties and background colour; RGBA regions composited on that background."""

    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.properties = dict(self._slide.properties)
        self.vendor = self.properties.get("openslide.vendor", "unknown")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)
        self.background = background_colour(self.properties)
        self._largest = largest_tile(self.properties, self.level_dimensions)
        keep_largest_tile(self._slide, self._largest[0])

    def largest_chunk(self) -> tuple[int, int]:
        """Bytes of the largest tile a read decodes, and the number of tiles in its level."""
        return self._largest

    def mpp(self) -> tuple[float | None, float | None]:
        return openslide_mpp(self.properties)

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return ()

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        ds = self._downsamples[level]
        location = (int(round(x * ds)), int(round(y * ds)))
        region = self._slide.read_region(location, level, (int(width), int(height)))
        return rgba_to_rgb(np.asarray(region), self.background)

    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    def close(self) -> None:
        self._slide.close()
