"""Whole-slide images read at a physical resolution (paper, *Downsampling*).

``open_slide(path)`` opens a slide with OpenSlide (through ``openslide-bin``, so no system
library is needed) or, for files OpenSlide cannot open but ``tifffile`` can (OME-TIFF pyramids
as QuPath and bfconvert write them, stripped TIFFs), with a small tifffile reader behind the
same interface. TIFF-family slides OpenSlide opens (Aperio SVS, generic tiled TIFF) keep
OpenSlide's metadata but have their tiles decoded directly by tifffile + imagecodecs, which is
several times faster and decodes in parallel, with identical pixels (``decoder="openslide"``
turns it off). ``Slide.read(mpp, box)`` returns RGB pixels at ``mpp`` µm/px:

* the level-0 MPP comes from ``openslide.mpp-x`` / ``openslide.mpp-y`` (OME ``PhysicalSizeX/Y``
  on the tifffile path); ``mpp=`` overrides it; a slide with none, or an implausible value, is
  refused with an error naming the file and the ``--mpp`` override;
* the target downsampling factor is ``target_mpp / level0_mpp`` per axis; pixels are read from
  the coarsest pyramid level whose downsample does not exceed it on either axis (no upsampling;
  a level over only by the integer rounding of its size counts as not exceeding it, see
  :meth:`Slide.level_for`) and shrunk with INTER_AREA to the exact target size (sizes are
  target sizes, so there is no off-by-one);
* opt-in, never default: ``level_tolerance`` (a level within P % of the target, resized slightly
  up) and ``dct_scaling`` (JPEG tiles decoded at 1/2, 1/4 or 1/8 in the DCT domain);
* large regions are read in blocks by a pool of threads (OpenSlide releases the GIL) and
  shrunk block by block with :func:`tseg.runtime.wsi.resample.area_resample`, which keeps memory
  bounded and assembles to the one-shot result within one 8-bit level.

Sizes at a resolution are ``floor(level0_size * level0_mpp / mpp)``: the image at ``mpp`` then
lies entirely inside the scanned area, and pixel ``(x, y)`` at ``mpp`` covers level-0 pixels
``[x * f, (x + 1) * f)`` with ``f = mpp / level0_mpp``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import threading
from collections import OrderedDict
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from tseg.runtime.errors import (
    ImplausibleMppError,
    InvalidArgumentError,
    MissingMppError,
    ResolutionError,
    SlideNotFoundError,
    SlideReadError,
    UnsupportedSlideError,
)
from tseg.runtime.util.parallel import run_jobs
from tseg.runtime.wsi.resample import area_resample

log = logging.getLogger(__name__)

#: Resolution the network sees (paper: 1 µm/px) and of the overview image (5 µm/px).
NETWORK_MPP = 1.0
OVERVIEW_MPP = 5.0
#: Level-0 resolutions outside this range are treated as wrong metadata. Scanners write about
#: 0.1-0.5 µm/px at level 0; 20 µm/px would already be a thumbnail.
PLAUSIBLE_MPP = (0.02, 20.0)
#: A request may be at most this much finer than level 0 (rounding in the metadata); anything
#: finer would be upsampling, which the paper rules out.
UPSAMPLE_TOLERANCE = 0.01
#: Source pixels per side of one block read by the blockwise reader.
DEFAULT_BLOCK_PX = 2048
DEFAULT_BACKGROUND = (255, 255, 255)
#: How to supply a resolution, in the terms of each audience (see SlideError.fix).
MPP_FIX = {"api": "Pass the level-0 resolution explicitly: open_slide(path, mpp=MICRONS_PER_PIXEL) or "
                  "Segmenter(..., mpp=MICRONS_PER_PIXEL).",
           "cli": "Pass the level-0 resolution explicitly: --mpp MICRONS_PER_PIXEL, or an mpp column in a "
                  "--csv slides table for per-slide values."}
#: An override is reported when it differs from plausible metadata by more than this fraction.
MPP_OVERRIDE_TOLERANCE = 0.01


def default_reader_threads() -> int:
    """Reader threads used when none are requested: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


class _Source(Protocol):
    """What a slide reader backend provides: pyramid geometry and raw level reads."""

    vendor: str
    level_dimensions: list[tuple[int, int]]
    properties: dict[str, str]
    background: tuple[int, int, int]

    def mpp(self) -> tuple[float | None, float | None]: ...

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        """RGB uint8 pixels of ``level`` in level coordinates (region inside the level); with
        ``scale`` in :meth:`dct_scales`, of the level decoded at ``1 / scale`` in the DCT domain."""
        ...

    def dct_scales(self, level: int) -> tuple[int, ...]: ...

    def associated_images(self) -> list[str]: ...

    def close(self) -> None: ...


# --- OpenSlide ------------------------------------------------------------------------------


def _rgba_to_rgb(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA on the slide's background colour.

    Opaque regions (almost all) are converted by OpenCV (SIMD: ~12x faster than a strided numpy
    copy of the 2048 px blocks the reader uses)."""
    import cv2

    alpha = cv2.extractChannel(rgba, 3)
    if cv2.minMaxLoc(alpha)[0] == 255:
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rgb = rgba[..., :3]
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    return np.clip(np.rint(rgb * a + bg * (1.0 - a)), 0, 255).astype(np.uint8)


class _OpenSlideSource:
    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.properties = dict(self._slide.properties)
        self.vendor = self.properties.get("openslide.vendor", "unknown")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)
        colour = self.properties.get("openslide.background-color")
        self.background = (
            tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[assignment]
            if colour and re.fullmatch(r"[0-9A-Fa-f]{6}", colour)
            else DEFAULT_BACKGROUND
        )

    def mpp(self) -> tuple[float | None, float | None]:
        return (_as_float(self.properties.get("openslide.mpp-x")),
                _as_float(self.properties.get("openslide.mpp-y")))

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return ()

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        ds = self._downsamples[level]
        location = (int(round(x * ds)), int(round(y * ds)))
        region = self._slide.read_region(location, level, (int(width), int(height)))
        return _rgba_to_rgb(np.asarray(region), self.background)

    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    def close(self) -> None:
        self._slide.close()


def _as_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


# --- tifffile (OME-TIFF and TIFFs OpenSlide refuses) ---------------------------------------------

_OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "\u00b5m": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3,
                 "cm": 1e4, "m": 1e6, "pm": 1e-6}


#: Decoded TIFF tiles kept per open slide, so that neighbouring blocks, which share the tiles
#: on their edges, decode each tile once (about one row of blocks of a 7680 px tile).
TILE_CACHE_BYTES = 96 * 2**20
_JPEG = 7  # TIFF compression code of (new-style) JPEG


class _TileCache:
    """A bounded, thread-safe LRU of decoded tiles keyed by ``(level, index, scale)``."""

    def __init__(self, capacity: int = TILE_CACHE_BYTES) -> None:
        self._items: "OrderedDict[tuple[int, int, int], np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[int, int, int], value: np.ndarray) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self._capacity and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes


class _TiffLevel:
    """Region reads from one tiled or stripped TIFF page (contig or planar RGB(A), uint8).

    Chunks are read with ``os.pread`` on the slide's own file descriptor (no lock; thread-safe)
    and decoded by tifffile's codecs (imagecodecs: libjpeg-turbo, OpenJPEG, zlib ...), which
    release the GIL, so reader threads decode in parallel.
    """

    def __init__(self, page: Any, fd: int, path: Path, level: int, cache: _TileCache) -> None:
        self.page = page
        self._fd = fd
        self._path = path
        self._level = level
        self._cache = cache
        if page.dtype is None or np.dtype(page.dtype) != np.uint8:
            raise UnsupportedSlideError(path, f"pixel type {page.dtype} is not 8-bit")
        samples = int(page.samplesperpixel)
        if samples not in (3, 4):
            raise UnsupportedSlideError(path, f"{samples} samples per pixel; RGB(A) is required")
        self.samples = samples
        self.separate = int(page.planarconfig) == 2
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        if page.is_tiled:
            self.chunk_w, self.chunk_h = int(page.tilewidth), int(page.tilelength)
        else:
            self.chunk_w, self.chunk_h = self.width, int(page.rowsperstrip or self.height)
        self.chunk_h = min(self.chunk_h, self.height) if not page.is_tiled else self.chunk_h
        self.across = -(-self.width // self.chunk_w)
        self.down = -(-self.height // self.chunk_h)
        self.compression = int(page.compression)
        self.photometric = int(page.photometric)
        # JPEG tiles inside a block are decoded by imagecodecs straight into a per-thread buffer
        # (no allocation, no cache: only tiles on block edges are shared between blocks), with
        # the colour spaces tifffile would use, so the pixels are the same as tifffile's.
        self._direct_jpeg: tuple[Any, Any] | None = None
        if self.compression == _JPEG and not self.separate and page.is_tiled and int(page.bitspersample) == 8:
            try:
                from tifffile.tifffile import jpeg_decode_colorspace

                self._direct_jpeg = jpeg_decode_colorspace(
                    page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
            except Exception:  # an older tifffile: decode through page.decode
                self._direct_jpeg = None
        self._scratch = threading.local()

    def dct_scales(self) -> tuple[int, ...]:
        """Power-of-two reductions libjpeg can decode in the DCT domain for this level."""
        if self.compression != _JPEG or self.separate or not self.page.is_tiled:
            return ()
        return tuple(s for s in (2, 4, 8) if self.chunk_w % s == 0 and self.chunk_h % s == 0)

    def _raw(self, index: int) -> bytes:
        offset, count = int(self.page.dataoffsets[index]), int(self.page.databytecounts[index])
        data = os.pread(self._fd, count, offset)
        if len(data) != count or count == 0:
            raise SlideReadError(self._path, f"TIFF chunk {index} of level {self._level} is truncated")
        return data

    def _decode_scaled(self, data: bytes, scale: int) -> np.ndarray:
        """libjpeg-turbo's DCT-domain scaled decoding (via Pillow's ``draft``) of one JPEG tile."""
        from PIL import Image

        tables = self.page.jpegtables
        stream = bytes(tables[:-2]) + data[2:] if tables else data
        image = Image.open(io.BytesIO(stream))
        image.draft("RGB", (self.chunk_w // scale, self.chunk_h // scale))
        if self.photometric == 2:  # RGB stored as is (Aperio): no YCbCr conversion
            tile = image.tile[0]
            image.tile = [tile._replace(args=(tile.args[0], "RGB"))]
        array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        if array.shape[:2] != (self.chunk_h // scale, self.chunk_w // scale):
            raise SlideReadError(self._path, f"JPEG tile decoded at 1/{scale} as {array.shape}")
        return array

    def _chunk(self, index: int, scale: int = 1) -> np.ndarray:
        key = (self._level, index, scale)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self._raw(index)
        try:
            if scale > 1:
                chunk = self._decode_scaled(data, scale)
            else:
                segment, _, _ = self.page.decode(data, index, jpegtables=self.page.jpegtables)
                if segment is None:
                    raise SlideReadError(self._path, f"TIFF chunk {index} is empty or corrupt")
                chunk = np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2], -1)
        except SlideReadError:
            raise
        except Exception as exc:  # codec errors on corrupt data
            raise SlideReadError(self._path, f"decoding TIFF chunk {index} of level {self._level} "
                                 f"failed: {exc}") from exc
        self._cache.put(key, chunk)
        return chunk

    def _decode_jpeg_into_scratch(self, index: int) -> np.ndarray:
        import imagecodecs

        scratch = getattr(self._scratch, "tile", None)
        if scratch is None:
            scratch = self._scratch.tile = np.empty((self.chunk_h, self.chunk_w, self.samples), np.uint8)
        colorspace, outcolorspace = self._direct_jpeg  # type: ignore[misc]
        try:
            imagecodecs.jpeg_decode(self._raw(index), bitspersample=8, tables=self.page.jpegtables,
                                    colorspace=colorspace, outcolorspace=outcolorspace,
                                    shape=(self.chunk_h, self.chunk_w), out=scratch)
        except SlideReadError:
            raise
        except Exception as exc:
            raise SlideReadError(self._path, f"decoding TIFF chunk {index} of level {self._level} "
                                 f"failed: {exc}") from exc
        return scratch

    def read(self, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        """Pixels of the region in level coordinates divided by ``scale`` (DCT scaling)."""
        out = np.empty((height, width, 3), dtype=np.uint8)
        cw, ch = self.chunk_w // scale, self.chunk_h // scale
        lw, lh = -(-self.width // scale), -(-self.height // scale)
        c0, c1 = x // cw, (x + width - 1) // cw
        r0, r1 = y // ch, (y + height - 1) // ch
        per_plane = self.across * self.down
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                cx, cy = c * cw, r * ch
                ix0, iy0 = max(x, cx), max(y, cy)
                ix1 = min(x + width, cx + cw, lw)
                iy1 = min(y + height, cy + ch, lh)
                inside = cx >= x and cy >= y and cx + cw <= x + width and cy + ch <= y + height
                if self.separate:
                    planes = [self._chunk(s * per_plane + r * self.across + c)[..., 0] for s in range(3)]
                    chunk = np.stack(planes, axis=-1)
                elif inside and scale == 1 and self._direct_jpeg is not None:
                    chunk = self._decode_jpeg_into_scratch(r * self.across + c)
                else:
                    chunk = self._chunk(r * self.across + c, scale)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = chunk[
                    iy0 - cy : iy1 - cy, ix0 - cx : ix1 - cx, :3
                ]
        return out


class _TiffFileSource:
    def __init__(self, path: Path) -> None:
        import tifffile

        self._tif = tifffile.TiffFile(str(path))
        self._fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            self._levels = _tiff_levels(self._tif, self._fd, path)
        except UnsupportedSlideError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many types for odd files
            self.close()
            raise UnsupportedSlideError(path, f"tifffile cannot read the image: {exc}") from exc
        self.vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        self.level_dimensions = [(lv.width, lv.height) for lv in self._levels]
        self.background = DEFAULT_BACKGROUND
        self.properties = {"tseg.reader": "tifffile", "tseg.vendor": self.vendor}
        self._mpp = self._read_mpp()

    def _read_mpp(self) -> tuple[float | None, float | None]:
        if self._tif.is_ome and self._tif.ome_metadata:
            try:
                root = ET.fromstring(self._tif.ome_metadata)
            except ET.ParseError:
                return (None, None)
            pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
            if pixels is None:
                return (None, None)
            result = []
            for axis in ("X", "Y"):
                size = _as_float(pixels.get(f"PhysicalSize{axis}"))
                unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
                scale = _OME_UNITS_UM.get(unit)
                result.append(size * scale if size is not None and scale is not None else None)
                if size is not None:
                    self.properties[f"ome.PhysicalSize{axis}"] = f"{size} {unit}"
            return (result[0], result[1])
        page = self._tif.pages[0]
        tags = page.tags
        unit = tags.get("ResolutionUnit")
        unit_value = int(unit.value) if unit is not None else 2
        um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit_value)
        result = []
        for name in ("XResolution", "YResolution"):
            tag = tags.get(name)
            if tag is None or um_per_unit is None:
                result.append(None)
                continue
            num, den = tag.value
            per_unit = num / den if den else 0.0
            result.append(um_per_unit / per_unit if per_unit > 0 else None)
        return (result[0], result[1])

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        return self._levels[level].read(x, y, width, height, scale)

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return self._levels[level].dct_scales()

    def associated_images(self) -> list[str]:
        return []

    def close(self) -> None:
        self._tif.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _tiff_levels(tif: Any, fd: int, path: Path) -> list[_TiffLevel]:
    series = tif.series[0]
    levels = getattr(series, "levels", None) or [series]
    cache = _TileCache()
    return [_TiffLevel(level.keyframe, fd, path, i, cache) for i, level in enumerate(levels)]


#: TIFF compressions whose tifffile/imagecodecs decoding was checked identical to OpenSlide's
#: (tests/runtime/wsi/test_slide.py: generated none/LZW/deflate/JPEG slides, the real Aperio JPEG
#: and JPEG 2000 (RGB, 33005) SVS; 32946 is deflate's old code). Everything else, e.g.
#: Aperio's YCbCr JPEG 2000 (33003), whose colours OpenSlide converts itself, stays with OpenSlide.
DIRECT_COMPRESSIONS = {1, 5, 7, 8, 32946, 33005}
DIRECT_VENDORS = {"aperio", "generic-tiff"}
DECODERS = ("auto", "openslide", "tifffile")


class _DirectTiffSource(_OpenSlideSource):
    """A TIFF-family slide (Aperio SVS, generic tiled TIFF) whose metadata come from OpenSlide
    and whose pixels are decoded straight from the TIFF tiles by tifffile + imagecodecs.

    Same levels, MPP, properties and background as OpenSlide; the decoded pixels are identical
    (checked per compression, see :data:`DIRECT_COMPRESSIONS`) and come 1.8-7x faster in
    ``benchmarks/peers.py``, and reader threads decode in parallel. One difference: OpenSlide
    reads a level whose downsample is not whole at a sub-pixel shift (it converts through
    level-0 coordinates); this reads the level's own pixels.
    """

    def __init__(self, path: Path, opened: _OpenSlideSource, tif: Any, fd: int, levels: list[_TiffLevel]) -> None:
        self.__dict__.update(opened.__dict__)
        self._tif, self._fd, self._levels = tif, fd, levels
        self.properties = dict(self.properties, **{"tseg.decoder": "tifffile"})

    @classmethod
    def wrap(cls, path: Path, opened: _OpenSlideSource) -> "_OpenSlideSource":
        """``opened`` with direct decoding when the TIFF is one we can decode identically."""
        if opened.vendor not in DIRECT_VENDORS:
            return opened
        import tifffile

        tif = fd = None
        try:
            tif = tifffile.TiffFile(str(path))
            fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_BINARY", 0))
            # OpenSlide's levels of these formats are tiled pages of the main IFD chain: match
            # them by size (tifffile's own pyramid detection misses non-2x pyramids).
            pages = [pg for pg in tif.pages if pg.is_tiled]
            cache = _TileCache()
            levels = []
            for i, (w, h) in enumerate(opened.level_dimensions):
                page = next((pg for pg in pages if (int(pg.imagewidth), int(pg.imagelength)) == (w, h)), None)
                if page is None:
                    break
                levels.append(_TiffLevel(page, fd, path, i, cache))
            same = [(lv.width, lv.height) for lv in levels] == list(opened.level_dimensions)
            usable = all(lv.page.is_tiled and lv.compression in DIRECT_COMPRESSIONS
                         and not lv.separate and lv.photometric in (2, 6) for lv in levels)
            if same and usable:
                return cls(path, opened, tif, fd, levels)
            log.debug("%s: tifffile levels or codecs differ from OpenSlide's; decoding with OpenSlide", path)
        except Exception as exc:  # anything odd: OpenSlide decodes as before
            log.debug("%s: direct TIFF decoding unavailable (%s); using OpenSlide", path, exc)
        if tif is not None:
            tif.close()
        if fd is not None:
            os.close(fd)
        return opened

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        return self._levels[level].read(x, y, width, height, scale)

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return self._levels[level].dct_scales()

    def close(self) -> None:
        super().close()
        self._tif.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _is_ome_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            header = fh.read(4)
        if header[:2] not in (b"II", b"MM"):
            return False
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:
        return False


# --- the public Slide -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadPlan:
    """How a resolution is read: the pyramid level and its pixels per target pixel.

    ``scale`` > 1: the level's JPEG tiles are decoded at ``1 / scale`` in the DCT domain
    (opt-in), and ``ratio`` counts pixels of that reduced decode.
    """

    level: int
    ratio: tuple[float, float]  # (decoded) level pixels per target pixel, x and y
    scale: int = 1


#: A level may exceed the target downsample only by the rounding of its integer size: by at
#: most this many level-0 pixels over its extent (``level0_size - level_size * factor``).
LEVEL_ROUNDING_PX = 1.0


class Slide:
    """An open whole-slide image with a level-0 resolution in µm/px on each axis.

    Thread-safe for concurrent reads. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path | str, source: _Source, mpp: tuple[float, float], mpp_source: str,
                 reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX,
                 level_tolerance: float = 0.0, dct_scaling: bool = False) -> None:
        self.path = path
        self._source = source
        self.mpp_x, self.mpp_y = mpp
        self.mpp_source = mpp_source
        #: Plausible metadata that an override replaced (differing by > 1 %), else None.
        self.stored_mpp: tuple[float, float] | None = None
        self.reader_threads = reader_threads or default_reader_threads()
        if block_px < 64:
            raise InvalidArgumentError(f"block_px must be >= 64, got {block_px!r}")
        self.block_px = int(block_px)
        if not (isinstance(level_tolerance, (int, float)) and 0.0 <= level_tolerance <= 50.0):
            raise InvalidArgumentError(f"level_tolerance is a percentage in [0, 50], got {level_tolerance!r}")
        self.level_tolerance = float(level_tolerance)
        self.dct_scaling = bool(dct_scaling)
        w0, h0 = source.level_dimensions[0]
        self.level_downsamples = [(w0 / w, h0 / h) for (w, h) in source.level_dimensions]

    # -- geometry --
    @property
    def vendor(self) -> str:
        return self._source.vendor

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._source.properties)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._source.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self._source.level_dimensions[0]

    @property
    def mpp(self) -> tuple[float, float]:
        return (self.mpp_x, self.mpp_y)

    @property
    def colour_correction(self) -> str | None:
        """What the reader corrected in the slide's colours (e.g. mislabelled YCbCr DICOM
        frames), or None."""
        return getattr(self._source, "colour_correction", None)

    @property
    def warnings(self) -> list[str]:
        """Things a user should know about how this slide was read (for summaries)."""
        notes = [] if self.colour_correction is None else [f"colours corrected: {self.colour_correction}"]
        stored = getattr(self, "stored_mpp", None)
        if self.mpp_source == "override" and stored is not None:
            notes.append(f"the given resolution {self.mpp_x:.4g} x {self.mpp_y:.4g} µm/px overrides the slide's "
                         f"plausible metadata {stored[0]:.4g} x {stored[1]:.4g} µm/px")
        return notes

    @property
    def decoder(self) -> str:
        """What decodes the pixels: ``openslide``, ``tifffile`` (direct TIFF tile decoding) or, for a
        source that says, its own decoder (``wsidicom`` for DICOMweb)."""
        own = getattr(self._source, "decoder", None)
        if isinstance(own, str):
            return own
        return "tifffile" if isinstance(self._source, (_DirectTiffSource, _TiffFileSource)) else "openslide"

    def origin(self) -> dict[str, Any]:
        """Where the slide came from, for summaries: ``path``, ``name``, ``size_bytes``,
        ``modified`` (a source may add more, e.g. the DICOMweb server and UIDs)."""
        own = getattr(self._source, "origin", None)
        if callable(own):
            return own()
        p = Path(self.path)
        stat = p.stat()
        return {"path": str(p.resolve()), "name": p.name, "size_bytes": stat.st_size,
                "modified": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()}

    def size_mm(self) -> tuple[float, float]:
        w0, h0 = self.dimensions
        return (w0 * self.mpp_x / 1000.0, h0 * self.mpp_y / 1000.0)

    def factors(self, mpp: float) -> tuple[float, float]:
        """Target downsampling factor per axis: ``mpp / level0_mpp`` (paper, *Downsampling*)."""
        if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
            raise InvalidArgumentError(f"mpp must be a positive number, got {mpp!r}")
        fx, fy = mpp / self.mpp_x, mpp / self.mpp_y
        if min(fx, fy) < 1.0 - UPSAMPLE_TOLERANCE:
            raise ResolutionError(
                self.path,
                f"{mpp} µm/px is finer than the slide's level 0 ({self.mpp_x:.4g} x "
                f"{self.mpp_y:.4g} µm/px); tseg-rt never upsamples. If the slide's resolution "
                f"metadata is wrong:", MPP_FIX,
            )
        return (fx, fy)

    def size_at(self, mpp: float) -> tuple[int, int]:
        """``(width, height)`` of the whole slide at ``mpp`` µm/px."""
        fx, fy = self.factors(mpp)
        w0, h0 = self.dimensions
        return (max(1, int(math.floor(w0 / fx + 1e-9))), max(1, int(math.floor(h0 / fy + 1e-9))))

    def _level_allowed(self, level: int, fx: float, fy: float) -> bool:
        w0, h0 = self.dimensions
        lw, lh = self._source.level_dimensions[level]
        dx, dy = self.level_downsamples[level]
        tolerance = 1.0 + self.level_tolerance / 100.0
        ok = []
        for d, f, size0, size in ((dx, fx, w0, lw), (dy, fy, h0, lh)):
            ok.append(d <= f * (1 + 1e-9)  # the paper: never upsample
                      or size0 - size * f <= LEVEL_ROUNDING_PX + 1e-9  # only the rounding of its size
                      or d <= f * tolerance * (1 + 1e-9))  # opt-in: within level_tolerance %
        return all(ok)

    def level_for(self, mpp: float) -> int:
        """The coarsest level whose downsample does not exceed the target factor on either axis
        (paper, *Downsampling*: no upsampling).

        A level whose downsample exceeds the factor only through the integer rounding of its
        size counts as not exceeding it: an Aperio-like level 1 of 8000 px over a level 0 of
        32001 px has a downsample of 4.000125 but is the 4x level; read at 1 µm/px from 0.25
        µm/px it is over by one level-0 pixel across its whole extent, not an upsampling. The
        rule: ``level0_size - level_size * factor <= 1`` on each axis. With
        ``level_tolerance = P`` (opt-in), a level within P % of the factor is also allowed, and
        is then resized slightly up.
        """
        fx, fy = self.factors(mpp)
        best = 0
        for level, (dx, dy) in enumerate(self.level_downsamples):
            if self._level_allowed(level, fx, fy):
                if dx * dy >= self.level_downsamples[best][0] * self.level_downsamples[best][1]:
                    best = level
        return best

    def read_plan(self, mpp: float) -> ReadPlan:
        fx, fy = self.factors(mpp)
        level = self.level_for(mpp)
        dx, dy = self.level_downsamples[level]
        rx, ry = fx / dx, fy / dy
        scale = 1
        if self.dct_scaling:
            # Opt-in: the largest power of two the JPEG decoder can reduce by that still leaves
            # at least one decoded pixel per target pixel (no upsampling).
            for s in sorted(self._source.dct_scales(level), reverse=True):
                if min(rx, ry) >= s * (1 - 1e-9):
                    scale = s
                    break
        return ReadPlan(level, (rx / scale, ry / scale), scale)

    # -- pixels --
    def read(self, mpp: float, box: tuple[int, int, int, int] | None = None,
             threads: int | None = None) -> np.ndarray:
        """RGB uint8 pixels of ``box = (x, y, width, height)`` (pixels at ``mpp``); default all."""
        full_w, full_h = self.size_at(mpp)
        if box is None:
            box = (0, 0, full_w, full_h)
        x, y, w, h = (int(v) for v in box)
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > full_w or y + h > full_h:
            raise InvalidArgumentError(
                f"box {box} is outside the slide, which is {full_w} x {full_h} px at {mpp} µm/px"
            )
        plan = self.read_plan(mpp)
        rx, ry = plan.ratio
        # Output block side (target px) so that a block reads about block_px source px per side.
        bw = max(1, min(w, int(self.block_px // max(rx, 1.0))))
        bh = max(1, min(h, int(self.block_px // max(ry, 1.0))))
        blocks = [(bx, by, min(bw, w - bx), min(bh, h - by))
                  for by in range(0, h, bh) for bx in range(0, w, bw)]
        out = np.empty((h, w, 3), dtype=np.uint8)
        lw, lh = self._source.level_dimensions[plan.level]
        if plan.scale > 1:  # the decoded level is smaller (the last pixel may include padding)
            lw, lh = -(-lw // plan.scale), -(-lh // plan.scale)

        def work(block: tuple[int, int, int, int]) -> None:
            bx, by, cw, ch = block
            a_x, a_y = (x + bx) * rx, (y + by) * ry
            b_x = min((x + bx + cw) * rx, float(lw))
            b_y = min((y + by + ch) * ry, float(lh))
            sx0, sy0 = int(math.floor(a_x + 1e-9)), int(math.floor(a_y + 1e-9))
            sx1 = min(lw, max(sx0 + 1, int(math.ceil(b_x - 1e-9))))
            sy1 = min(lh, max(sy0 + 1, int(math.ceil(b_y - 1e-9))))
            try:
                if plan.scale > 1:
                    src = self._source.read_level(plan.level, sx0, sy0, sx1 - sx0, sy1 - sy0, plan.scale)
                else:
                    src = self._source.read_level(plan.level, sx0, sy0, sx1 - sx0, sy1 - sy0)
            except Exception as exc:  # OpenSlide/tifffile errors on corrupt tiles
                raise SlideReadError(self.path, f"reading level {plan.level} failed: {exc}") from exc
            out[by : by + ch, bx : bx + cw] = area_resample(
                src, (cw, ch), (rx, ry), (a_x - sx0, a_y - sy0)
            )

        run_jobs(work, blocks, max(1, min(threads or self.reader_threads, len(blocks))), "tseg-read")
        return out

    def overview(self, mpp: float = OVERVIEW_MPP) -> np.ndarray:
        """The whole slide at ``mpp`` (5 µm/px by default): background mask, display, evaluation."""
        return self.read(mpp)

    def info(self) -> dict[str, Any]:
        """Vendor, levels, MPP and physical size, for ``tseg-rt info``."""
        w_mm, h_mm = self.size_mm()
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "levels": [
                {"level": i, "dimensions": list(d),
                 "downsample": [round(v, 6) for v in self.level_downsamples[i]]}
                for i, d in enumerate(self.level_dimensions)
            ],
            "mpp": [self.mpp_x, self.mpp_y],
            "mpp_source": self.mpp_source,
            "decoder": self.decoder,
            "size_mm": [round(w_mm, 4), round(h_mm, 4)],
            "size_at_1mpp": list(self.size_at(NETWORK_MPP)) if min(self.mpp) <= NETWORK_MPP * (1 + UPSAMPLE_TOLERANCE) else None,
            "size_at_5mpp": list(self.size_at(OVERVIEW_MPP)),
            "associated_images": self._source.associated_images(),
            "colour_correction": self.colour_correction,
            "warnings": self.warnings,
        }

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({str(self.path)!r}, {w}x{h} px, {self.mpp_x:.4g}x{self.mpp_y:.4g} µm/px, {self.vendor})"


def _check_mpp(path: Path, mpp: tuple[float | None, float | None], origin: str) -> tuple[float, float]:
    mx, my = mpp
    if mx is None and my is None:
        raise MissingMppError(
            path,
            "the slide has no resolution (µm per pixel) metadata; the paper excludes such "
            "slides.", MPP_FIX,
        )
    mx = mx if mx is not None else my
    my = my if my is not None else mx
    lo, hi = PLAUSIBLE_MPP
    for value in (mx, my):
        if value is None or not (lo <= value <= hi):
            raise ImplausibleMppError(
                path,
                f"the {origin} resolution {mx} x {my} µm/px is outside the plausible range "
                f"{lo}-{hi} µm/px for a whole-slide image (scanners write about 0.1-0.5 at "
                f"level 0), so the metadata is probably wrong.", MPP_FIX,
            )
    return (float(mx), float(my))  # type: ignore[arg-type]


def _open_source(p: Path | str, decoder: str = "auto") -> _Source:
    """The reader for ``p``: a DICOMweb series (a URL), DICOM series, OME-TIFF (tifffile),
    OpenSlide (its metadata, with TIFF-family tiles decoded directly unless
    ``decoder="openslide"``), then tifffile."""
    from tseg.runtime.wsi.dicomweb import is_dicomweb_url

    if is_dicomweb_url(p):
        from tseg.runtime.wsi.dicomweb import DicomWebSource

        return DicomWebSource(str(p))
    p = Path(p)
    if not p.exists():
        raise SlideNotFoundError(p, "no such file or folder")
    from tseg.runtime.wsi import dicom

    if dicom.is_dicom_slide_path(p):
        return dicom.DicomSource(p)
    if p.is_dir():
        raise UnsupportedSlideError(p, "is a folder; give a slide file, a DICOM series folder, or use "
                                       "`tseg-rt run FOLDER` to search it")
    source: _Source | None = None
    errors: list[str] = []
    if _is_ome_tiff(p):
        return _TiffFileSource(p)
    import openslide

    try:
        source = _OpenSlideSource(p)
        if decoder in ("auto", "tifffile"):
            source = _DirectTiffSource.wrap(p, source)
    except openslide.OpenSlideUnsupportedFormatError:
        errors.append("OpenSlide: unsupported or missing image file")
    except openslide.OpenSlideError as exc:
        errors.append(f"OpenSlide: {exc}")
    if source is None:
        try:
            source = _TiffFileSource(p)
        except UnsupportedSlideError as exc:
            errors.append(str(exc).split(": ", 1)[-1])
        except Exception as exc:
            errors.append(f"tifffile: {exc}")
    if source is None:
        raise UnsupportedSlideError(
            p,
            "not a slide format tseg-rt can read (" + "; ".join(errors) + "). Supported: the "
            "formats OpenSlide reads (Aperio .svs, Hamamatsu .ndpi, generic tiled TIFF, MIRAX, "
            "Philips, Leica, Ventana, DICOM series, ...) and OME-TIFF. Is the file complete?",
        )
    return source


def _as_location(path: str | os.PathLike[str]) -> Path | str:
    """A Path, or a DICOMweb URL kept as its canonical string."""
    from tseg.runtime.wsi.dicomweb import DicomWebLocation, is_dicomweb_url

    return DicomWebLocation.parse(str(path)).url if is_dicomweb_url(path) else Path(path)


def _plausible(mpp: tuple[float | None, float | None]) -> tuple[float, float] | None:
    mx, my = mpp
    mx = mx if mx is not None else my
    my = my if my is not None else mx
    lo, hi = PLAUSIBLE_MPP
    if mx is None or my is None or not (lo <= mx <= hi and lo <= my <= hi):
        return None
    return (float(mx), float(my))


def open_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None,
               reader_threads: int | None = None, block_px: int = DEFAULT_BLOCK_PX,
               decoder: str = "auto", level_tolerance: float = 0.0, dct_scaling: bool = False) -> Slide:
    """Open a whole-slide image: a file, the folder of a DICOM series, or a DICOMweb series URL
    (``https://HOST/ROOT/studies/S/series/T``, :mod:`tseg.runtime.wsi.dicomweb`; credentials from
    ``TSEG_DICOMWEB_CREDENTIALS`` or the other variables of :mod:`tseg.runtime.util.http`).

    ``mpp`` overrides the level-0 resolution (one value for both axes, or ``(x, y)``); when it
    differs from plausible metadata, :attr:`Slide.warnings` says so (and a warning is logged).
    ``decoder``: ``auto`` decodes TIFF-family slides (Aperio SVS, generic tiled TIFF) directly
    with tifffile + imagecodecs when their codecs are ones checked identical to OpenSlide's,
    everything else with OpenSlide; ``openslide`` forces OpenSlide (OME-TIFF is always read with
    tifffile, DICOM series through :mod:`tseg.runtime.wsi.dicom`). ``level_tolerance`` (percent) and
    ``dct_scaling`` are opt-in speed-ups that change the pixels slightly (see
    :meth:`Slide.level_for`, :class:`ReadPlan` and the README).
    Raises :class:`~tseg.runtime.errors.SlideNotFoundError`,
    :class:`~tseg.runtime.errors.UnsupportedSlideError`,
    :class:`~tseg.runtime.errors.MissingMppError` or
    :class:`~tseg.runtime.errors.ImplausibleMppError`, each naming the file and the fix.
    """
    p = _as_location(path)
    if decoder not in DECODERS:
        raise InvalidArgumentError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    source = _open_source(p, decoder)
    stored = None
    try:
        if mpp is not None:
            values = [float(mpp)] * 2 if isinstance(mpp, (int, float)) else [float(v) for v in mpp]
            if len(values) != 2:
                raise InvalidArgumentError(f"mpp must be a number or (x, y), got {mpp!r}")
            checked = _check_mpp(p, (values[0], values[1]), "given")
            origin = "override"
            stored = _plausible(source.mpp())
            if stored is not None and all(abs(g - s) <= MPP_OVERRIDE_TOLERANCE * s for g, s in zip(checked, stored)):
                stored = None  # the override agrees with the metadata: nothing to report
            if stored is not None:
                log.warning("%s: the given resolution %.4g x %.4g µm/px overrides the slide's plausible metadata "
                            "%.4g x %.4g µm/px", p, checked[0], checked[1], stored[0], stored[1])
        else:
            checked = _check_mpp(p, source.mpp(), "stored")
            origin = "metadata"
    except Exception:
        source.close()
        raise
    try:
        slide = Slide(p, source, checked, origin, reader_threads=reader_threads, block_px=block_px,
                      level_tolerance=level_tolerance, dct_scaling=dct_scaling)
    except Exception:
        source.close()
        raise
    slide.stored_mpp = stored
    return slide


def describe_slide(path: str | os.PathLike[str], mpp: float | Sequence[float] | None = None) -> dict[str, Any]:
    """What ``tseg-rt info`` shows: :meth:`Slide.info`, or, for a slide whose resolution is
    missing or implausible, its vendor, levels and sizes in pixels with the problem stated."""
    p = _as_location(path)
    try:
        with open_slide(p, mpp) as slide:
            return slide.info()
    except (MissingMppError, ImplausibleMppError) as exc:
        problem = exc
    source = _open_source(p)
    try:
        w0, h0 = source.level_dimensions[0]
        stored = source.mpp()
        return {
            "path": str(p),
            "vendor": source.vendor,
            "dimensions": [w0, h0],
            "levels": [{"level": i, "dimensions": list(d), "downsample": [round(w0 / d[0], 6), round(h0 / d[1], 6)]}
                       for i, d in enumerate(source.level_dimensions)],
            "mpp": None,
            "stored_mpp": [stored[0], stored[1]] if any(v is not None for v in stored) else None,
            "resolution": ("missing" if isinstance(problem, MissingMppError) else "implausible")
                          + f": {problem.message} Sizes in mm and at 1 / 5 µm/px are unknown.",
            "associated_images": source.associated_images(),
            "colour_correction": getattr(source, "colour_correction", None),
        }
    finally:
        source.close()
