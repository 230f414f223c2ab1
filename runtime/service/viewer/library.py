"""The results a viewer shows: result folders directly under ``RESULTS``, each slide opened only
at the path its result recorded, and each layer's tiles.

Rules (as ``serve``'s, see :mod:`tseg.runtime.service.paths`): a name is a folder directly under
the results folder, not hidden, not a symbolic link, with a ``summary.json`` (read without
following links); the slide is the path in that summary, refused when it is now a link (its
recorded path is a real path) or is gone; result files are read without following links.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tseg.runtime.errors import OutputError, TsegError
from tseg.runtime.outputs.files import FOREGROUND, GEOJSON, MASK, PROBABILITY_TIFF
from tseg.runtime.outputs.overlay import colour_lut
from tseg.runtime.outputs.summary import read_summary
from tseg.runtime.method.polygons import TUMOUR_COLOUR
from tseg.runtime.service.paths import PathRefused
from tseg.runtime.service.viewer.deepzoom import DeepZoom, TileOutOfRange
from tseg.runtime.service.viewer.tiles import (TISSUE_COLOUR, ArrayImage, LayerImage, TileCache, encode, heat_rgba,
                                               mask_rgba, read_area)
from tseg.runtime.util.safeio import UnsafeFileError, read_bytes
from tseg.runtime.wsi.slide import Slide, open_slide

log = logging.getLogger(__name__)

#: How many levels the page's grid goes past full resolution (2x, 4x magnified).
OVERZOOM = 2
#: layer -> tile format
LAYERS = {"slide": "jpeg", "probability": "png", "mask": "png", "tissue": "png"}


@dataclass
class OpenResult:
    """One result folder with its slide and layers opened (lazily, once)."""

    name: str
    folder: Path
    summary: dict[str, Any]
    slide: Slide
    images: dict[str, LayerImage] = field(default_factory=dict)
    others: list[Slide] = field(default_factory=list)  # probability.tif, closed with the slide
    stamp: tuple[int, int, int] = (0, 0, 0)  # summary.json's inode, time and size when opened


class Library:
    """The result folders under ``results`` and their tiles (opened slides are kept until
    :meth:`close`; tiles are cached within ``cache_bytes``)."""

    def __init__(self, results: str | os.PathLike[str], cache_bytes: int | None = None,
                 tile_size: int = 254, overlap: int = 1) -> None:
        self.root = Path(os.path.realpath(results))
        if not self.root.is_dir():
            raise TsegError(f"{results}: no such results folder; give the folder `tseg-rt run` wrote its results into")
        self.cache = TileCache() if cache_bytes is None else TileCache(cache_bytes)
        self.tile_size, self.overlap = tile_size, overlap
        self._open: dict[str, OpenResult] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._lut = colour_lut()

    # -- which folders --
    def names(self) -> list[str]:
        """The result folders with a summary, sorted."""
        out = []
        for entry in sorted(self.root.iterdir(), key=lambda p: p.name.lower()):
            try:
                self.folder(entry.name)
            except PathRefused:
                continue
            if os.path.lexists(entry / "summary.json"):
                out.append(entry.name)
        return out

    def folder(self, name: str) -> Path:
        """The result folder ``name``; :class:`PathRefused` (``not_found``) otherwise."""
        if not name or name.startswith(".") or "/" in name or "\0" in name or name in ("..",):
            raise PathRefused("not_found", f"no result named {name!r} in {self.root}")
        path = self.root / name
        try:
            st = os.lstat(path)
        except OSError:
            raise PathRefused("not_found", f"no result named {name!r} in {self.root}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise PathRefused("not_found", f"{path} is not a result folder (a link or a file); the viewer shows "
                                           "only real folders inside the results folder")
        return path

    def summary(self, name: str) -> dict[str, Any]:
        folder = self.folder(name)
        try:
            summary = read_summary(folder)
        except OutputError as exc:
            raise PathRefused("not_found", str(exc)) from None
        if summary is None:
            raise PathRefused("not_found", f"{folder} has no finished result (no summary.json)")
        return summary

    def result_file(self, name: str, file: str) -> bytes:
        """A result file's bytes, never through a link; ``not_found`` when absent."""
        folder = self.folder(name)
        try:
            return read_bytes(folder / file, follow=False, below=self.root, limit=None)
        except (OSError, UnsafeFileError):
            raise PathRefused("not_found", f"{folder / file} is missing or not a regular file") from None

    # -- opened results --
    def _stamp(self, name: str) -> tuple[int, int, int]:
        try:
            st = os.lstat(self.folder(name) / "summary.json")
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def result(self, name: str) -> OpenResult:
        """The result ``name`` opened; opened anew (its tiles forgotten) when its ``summary.json``
        changed, as a new result of the slide (or a post-processing) rewrites it last."""
        stamp = self._stamp(name)
        with self._lock:
            opened = self._open.get(name)
        if opened is not None:
            if opened.stamp == stamp:
                return opened
            self.forget(name, close=False)  # tiles may still be read from it: dropped, closed when unused
        summary = self.summary(name)
        recorded = str((summary.get("slide") or {}).get("path") or "")
        is_url = recorded.startswith(("http://", "https://"))
        if not recorded or (not is_url and (os.path.realpath(recorded) != recorded or not os.path.exists(recorded))):
            raise PathRefused("not_found", f"the slide of {name} is not at the path its result recorded "
                                           f"({recorded or 'none'}); it was moved, replaced by a link or deleted")
        mpp = (summary.get("slide") or {}).get("mpp_level0")
        # Shown, not segmented: the brightfield rule of open_slide is for segmenting (a result made
        # with --allow-non-brightfield is shown too).
        slide = open_slide(recorded, mpp=mpp if (summary.get("slide") or {}).get("mpp_source") == "override" else None,
                           allow_non_brightfield=True)
        opened = OpenResult(name, self.folder(name), summary, slide, stamp=stamp)
        with self._lock:
            if name in self._open:
                slide.close()
                return self._open[name]
            self._open[name] = opened
        return opened

    def deepzoom(self, name: str, layer: str, tile_size: int | None = None, overlap: int | None = None) -> DeepZoom:
        if layer not in LAYERS:
            raise PathRefused("not_found", f"no layer {layer!r}; the layers are {', '.join(LAYERS)}")
        w, h = self.result(name).slide.dimensions
        return DeepZoom(w, h, tile_size or self.tile_size, self.overlap if overlap is None else overlap, LAYERS[layer])

    def image(self, opened: OpenResult, layer: str) -> LayerImage:
        """The layer's pyramid, opened once (concurrent first requests wait for one opening)."""
        if layer in opened.images:
            return opened.images[layer]
        with self._opening:
            if layer not in opened.images:
                opened.images[layer] = self._open_image(opened, layer)
        return opened.images[layer]

    def _open_image(self, opened: OpenResult, layer: str) -> LayerImage:
        if layer == "slide":
            image: LayerImage = opened.slide.source
        elif layer == "probability":
            path = opened.folder / PROBABILITY_TIFF
            if os.path.islink(path) or not os.path.isfile(path):
                raise PathRefused("not_found", f"{path} is missing (results written without the probability map)")
            other = open_slide(path, allow_non_brightfield=True)  # the grey probability pyramid
            opened.others.append(other)
            image = other.source
        else:
            data = self.result_file(opened.name, MASK if layer == "mask" else FOREGROUND)
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if array is None:
                raise PathRefused("not_found", f"{opened.folder} holds an unreadable {layer} picture")
            image = ArrayImage(array)
        return image

    def tile(self, name: str, layer: str, level: int, col: int, row: int) -> bytes:
        """One encoded tile (:class:`~tseg.runtime.service.viewer.deepzoom.TileOutOfRange` outside the image)."""
        dz = self.deepzoom(name, layer)
        dz.tile_box(level, col, row)  # out of range: before the cache
        return self.cache.get((name, layer, level, col, row), lambda: self._render(name, layer, dz, level, col, row))

    def view_tile(self, name: str, layer: str, level: int, col: int, row: int, size: int = 256) -> bytes:
        """A tile of the viewer page's own grid: ``size`` px, no overlap, always full-sized (padded
        with the background or transparency), blank beside the slide. Levels go up to
        :data:`OVERZOOM` past Deep Zoom's last (level 0 magnified 2x, 4x); beyond, out of range."""
        dz = self.deepzoom(name, layer, size, 0)
        last = dz.level_count - 1
        if not 0 <= level <= last + OVERZOOM:
            raise TileOutOfRange(f"level {level} is outside 0..{last + OVERZOOM}")
        f = 2.0 ** (level - last)  # screen px per level-0 px
        vw, vh = math.ceil(dz.width * f), math.ceil(dz.height * f)
        inside = 0 <= col * size < vw and 0 <= row * size < vh
        if not inside:
            return self.cache.get(("blank", layer, size), lambda: self._encode(layer, None, size))
        w, h = min(size, vw - col * size), min(size, vh - row * size)
        box = (col * size / f, row * size / f, min(dz.width, (col * size + w) / f), min(dz.height, (row * size + h) / f))
        return self.cache.get((name, layer, "view", size, level, col, row),
                              lambda: self._encode(layer, self._pixels(name, layer, dz, box, (w, h)), size))

    def _render(self, name: str, layer: str, dz: DeepZoom, level: int, col: int, row: int) -> bytes:
        _, _, w, h = dz.tile_box(level, col, row)
        return self._encode(layer, self._pixels(name, layer, dz, dz.level0_box(level, col, row), (w, h)))

    @staticmethod
    def _encode(layer: str, pixels: np.ndarray | None, pad: int | None = None) -> bytes:
        """Encode a tile; ``pad``: to ``pad`` x ``pad`` px (background or transparency); None pixels: blank."""
        channels = 3 if layer == "slide" else 4
        if pixels is None or (pad is not None and pixels.shape[:2] != (pad, pad)):
            full = np.full((pad or 1, pad or 1, channels), 255 if channels == 3 else 0, np.uint8)
            if pixels is not None:
                full[: pixels.shape[0], : pixels.shape[1]] = pixels
            pixels = full
        return encode(pixels, LAYERS[layer])

    def _pixels(self, name: str, layer: str, dz: DeepZoom, box: tuple[float, float, float, float],
                out: tuple[int, int]) -> np.ndarray:
        """The layer's pixels of ``box`` (slide level-0 px) at ``out`` size, coloured."""
        opened = self.result(name)
        image = self.image(opened, layer)
        x0, y0, x1, y1 = box
        iw, ih = image.level_dimensions[0]
        sx, sy = iw / dz.width, ih / dz.height  # the layer's pixels per slide level-0 pixel
        pixels = read_area(image, (x0 * sx, y0 * sy, x1 * sx, y1 * sy), out)
        if layer == "slide":
            return (pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2))[..., :3]
        if layer == "probability":
            return heat_rgba(pixels, self._lut)
        return mask_rgba(pixels, TUMOUR_COLOUR if layer == "mask" else TISSUE_COLOUR)

    def geojson(self, name: str) -> bytes:
        return self.result_file(name, GEOJSON)

    def forget(self, name: str, close: bool = True) -> None:
        """Drop a result's tiles and its opened slide (closed now with ``close``)."""
        with self._lock:
            opened = self._open.pop(name, None)
        if opened is not None and close:
            for slide in (opened.slide, *opened.others):
                slide.close()
        self.cache.drop((name,))

    def close(self) -> None:
        for name in list(self._open):
            self.forget(name)
