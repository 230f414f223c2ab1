"""Tiles of the viewer's layers: pixels of an area from tseg-rt's own reader, coloured, encoded,
and kept in a bounded in-memory cache.

A *layer image* is anything with pyramid levels and ``read_level`` (a :class:`~tseg.runtime.wsi.base.SlideSource`
has both): the slide itself, ``probability.tif``, or a result PNG held as an array. An area is
read from the coarsest level that is not coarser than the tile needs
(:func:`tseg.runtime.wsi.levels.choose_level`, the rule of the paper's *Downsampling*) and shrunk
with the exact area average (:func:`tseg.runtime.wsi.resample.area_resample`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from tseg.runtime.wsi.levels import choose_level
from tseg.runtime.wsi.resample import area_resample

#: Alpha of the tumour fill and of the tissue fill (the contour is opaque).
MASK_FILL_ALPHA = 90
TISSUE_COLOUR = (0, 114, 178)  # Okabe & Ito blue: away from the tumour orange and the stains
#: Probabilities under this (of 255) are left transparent in the heat map.
HEAT_FLOOR = 13
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class LayerImage(Protocol):
    """A pyramid that tiles are read from (a slide source has this shape)."""

    @property
    def level_dimensions(self) -> Sequence[tuple[int, int]]: ...

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray: ...


class ArrayImage:
    """One array (a result PNG) as a one-level pyramid."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.level_dimensions = [(int(array.shape[1]), int(array.shape[0]))]

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self.array[y : y + height, x : x + width]


def read_area(image: LayerImage, box: tuple[float, float, float, float], out_size: tuple[int, int]) -> np.ndarray:
    """Pixels of ``box = (x0, y0, x1, y1)`` (level-0 px of ``image``) shrunk to ``out_size``."""
    x0, y0, x1, y1 = box
    w, h = out_size
    dims = list(image.level_dimensions)
    w0, h0 = dims[0]
    downsamples = [(w0 / lw, h0 / lh) for lw, lh in dims]
    level = choose_level(dims, downsamples, ((x1 - x0) / w, (y1 - y0) / h))
    dx, dy = downsamples[level]
    lw, lh = dims[level]
    ax, ay, bx, by = x0 / dx, y0 / dy, min(x1 / dx, lw), min(y1 / dy, lh)
    sx0, sy0 = int(math.floor(ax + 1e-9)), int(math.floor(ay + 1e-9))
    sx1 = min(lw, max(sx0 + 1, int(math.ceil(bx - 1e-9))))
    sy1 = min(lh, max(sy0 + 1, int(math.ceil(by - 1e-9))))
    src = np.ascontiguousarray(image.read_level(level, sx0, sy0, sx1 - sx0, sy1 - sy0))
    return area_resample(src, (w, h), ((bx - ax) / w, (by - ay) / h), (ax - sx0, ay - sy0))


def heat_rgba(probability: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The probability (x 255) as a heat map through ``lut`` (256 x 3), transparent near 0."""
    p = probability if probability.ndim == 2 else probability[..., 0]
    out = np.empty(p.shape + (4,), np.uint8)
    out[..., :3] = lut[p]
    out[..., 3] = np.where(p >= HEAT_FLOOR, 255, 0)
    return out


def mask_rgba(mask: np.ndarray, colour: Sequence[int], contour_px: int = 2) -> np.ndarray:
    """A mask (0/255, or its area average) as a translucent fill with an opaque contour."""
    m = (mask if mask.ndim == 2 else mask[..., 0]) >= 128
    out = np.zeros(m.shape + (4,), np.uint8)
    out[m] = (*colour, MASK_FILL_ALPHA)
    if contour_px > 0 and m.any():
        kernel = np.ones((2 * contour_px + 1, 2 * contour_px + 1), np.uint8)
        inner = cv2.erode(m.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
        out[m & ~inner] = (*colour, 255)
    return out


def encode(pixels: np.ndarray, fmt: str, quality: int = 85) -> bytes:
    """JPEG (RGB) or PNG (RGB or RGBA) bytes."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    else:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"cannot encode a {pixels.shape} tile as {fmt}")
    return buf.tobytes()


class TileCache:
    """Encoded tiles, least recently used dropped first, at most ``max_bytes`` in all; thread-safe.
    Concurrent requests for one missing tile render it once."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            data = make()
            with self._lock:
                self._pending.pop(key, None)
                if len(data) <= self.max_bytes:
                    self._items[key] = data
                    self.bytes += len(data)
                    while self.bytes > self.max_bytes:
                        _, old = self._items.popitem(last=False)
                        self.bytes -= len(old)
            return data

    def drop(self, prefix: tuple) -> None:
        """Forget every tile whose key starts with ``prefix`` (a result that changed)."""
        with self._lock:
            for key in [k for k in self._items if k[: len(prefix)] == prefix]:
                self.bytes -= len(self._items.pop(key))
