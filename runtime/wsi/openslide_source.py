"""Slides read by OpenSlide (through ``openslide-bin``, so no system library is needed): the
formats OpenSlide reads (Aperio, Hamamatsu, MIRAX, Philips, Leica, Ventana, generic tiled TIFF...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tseg.runtime.wsi.mpp import openslide_mpp
from tseg.runtime.wsi.base import background_colour, rgba_to_rgb


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
