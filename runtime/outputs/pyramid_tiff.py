"""Pyramidal tiled TIFF writing with resolution tags (outputs, generated slides, tests).

Files are laid out the way OpenSlide's generic-TIFF driver reads them: level 0, then each
reduced level as the next page of the main IFD chain with ``subfiletype=1``, every page tiled,
and ``XResolution``/``YResolution`` in pixels per centimetre, so OpenSlide reports every level
and ``openslide.mpp-x``/``-y``. ``ome=True`` writes an OME-TIFF instead (levels as SubIFDs and
``PhysicalSizeX/Y`` in µm, as QuPath and bfconvert do), which tseg-rt reads with tifffile.

A level can be an array or a *renderer* ``(x, y, width, height) -> array`` that produces any
region on demand, so slides far larger than memory can be written tile by tile.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import cv2
import numpy as np

from tseg.runtime.util.atomic import atomic_write

Renderer = Callable[[int, int, int, int], np.ndarray]
Level = Union[np.ndarray, tuple[Renderer, tuple[int, int]]]  # array, or (renderer, (w, h))


def pyramid_from_array(image: np.ndarray, min_size: int = 256, factor: int = 2,
                       max_levels: int = 8) -> list[np.ndarray]:
    """Level 0 and successive INTER_AREA reductions by ``factor`` down to about ``min_size``."""
    levels = [image]
    while len(levels) < max_levels and min(levels[-1].shape[:2]) // factor >= min_size:
        prev = levels[-1]
        size = (prev.shape[1] // factor, prev.shape[0] // factor)
        levels.append(cv2.resize(prev, size, interpolation=cv2.INTER_AREA))
    return levels


def _level_shape(level: Level) -> tuple[int, int]:
    if isinstance(level, np.ndarray):
        return (level.shape[1], level.shape[0])
    return level[1]


def _tiles(level: Level, tile: int, samples: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    width, height = _level_shape(level)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            w, h = min(tile, width - x), min(tile, height - y)
            if isinstance(level, np.ndarray):
                block = level[y : y + h, x : x + w]
            else:
                block = level[0](x, y, w, h)
            out = np.zeros((tile, tile, samples) if samples > 1 else (tile, tile), dtype=dtype)
            out[:h, :w] = block.reshape(out[:h, :w].shape)
            yield out


def write_pyramid(path: str | os.PathLike[str], levels: Sequence[Level], mpp: float | tuple[float, float],
                  tile: int = 256, compression: str | None = "zlib", ome: bool = False,
                  description: str | None = None, software: str = "tseg-rt") -> Path:
    """Write ``levels`` (level 0 first) as a pyramidal tiled TIFF with level-0 ``mpp`` µm/px.

    The file is written to a temporary name beside ``path`` and renamed into place.
    """
    import tifffile

    path = Path(path)
    mpp_x, mpp_y = (mpp, mpp) if isinstance(mpp, (int, float)) else mpp
    w0, h0 = _level_shape(levels[0])
    first = levels[0] if isinstance(levels[0], np.ndarray) else levels[0][0](0, 0, 1, 1)
    samples = 1 if first.ndim == 2 else first.shape[2]
    dtype = first.dtype
    photometric = "rgb" if samples == 3 else "minisblack"

    def writer(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=w0 * h0 * samples > 2**31, ome=ome) as tif:
            for index, level in enumerate(levels):
                width, height = _level_shape(level)
                shape = (height, width, samples) if samples > 1 else (height, width)
                scale_x, scale_y = w0 / width, h0 / height
                kwargs: dict = dict(
                    shape=shape,
                    dtype=dtype,
                    tile=(tile, tile),
                    photometric=photometric,
                    compression=compression,
                    resolution=(1e4 / (mpp_x * scale_x), 1e4 / (mpp_y * scale_y)),
                    resolutionunit="CENTIMETER",
                )
                if ome:
                    if index == 0:
                        kwargs["subifds"] = len(levels) - 1
                        kwargs["metadata"] = {
                            "axes": "YXS" if samples > 1 else "YX",
                            "PhysicalSizeX": mpp_x, "PhysicalSizeXUnit": "µm",
                            "PhysicalSizeY": mpp_y, "PhysicalSizeYUnit": "µm",
                        }
                    else:
                        kwargs["subfiletype"] = 1
                        kwargs["metadata"] = None
                else:
                    kwargs["metadata"] = None
                    if index == 0:
                        kwargs["description"] = description
                        kwargs["software"] = software
                    else:
                        kwargs["subfiletype"] = 1
                tif.write(_tiles(level, tile, samples, dtype), **kwargs)

    atomic_write(path, writer)
    return path
