"""Region reads straight from the tiles (or strips) of a TIFF page, by tifffile + imagecodecs.

Used for OME-TIFF and TIFFs OpenSlide refuses, and for the TIFF-family slides OpenSlide opens
(Aperio SVS, generic tiled TIFF), whose tiles decode here several times faster than through
OpenSlide, in parallel, with identical pixels (:mod:`tseg.runtime.wsi.tifffile_source`).
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tseg.runtime.errors import SlideReadError, UnsupportedPixelsError, UnsupportedSlideError
from tseg.runtime.wsi.base import DEFAULT_BACKGROUND, rgba_to_rgb
from tseg.runtime.wsi.jpeg_check import defines_restarts, jpeg_problem

#: Decoded TIFF tiles kept per open slide, so that neighbouring blocks, which share the tiles
#: on their edges, decode each tile once (about one row of blocks of a 7680 px tile).
TILE_CACHE_BYTES = 96 * 2**20
JPEG = 7  # TIFF compression code of (new-style) JPEG
#: Most pages (IFDs) a slide's main TIFF chain may hold; real pyramids have a few dozen.
MAX_TIFF_PAGES = 10_000
#: What to do about a TIFF whose structure is damaged, in the user's terms.
DAMAGED = "the file is damaged or was not written by a scanner; re-export or re-scan the slide"


class DamagedTiffError(UnsupportedSlideError):
    """The TIFF's structure is impossible (a looping chain, empty sizes, short tables, data past
    its end): refused before any pixel is read, on every decoding path."""


def check_ifd_chain(fd: int, path: Path, max_pages: int = MAX_TIFF_PAGES) -> int:
    """The number of pages in the main IFD chain of a (Big)TIFF, read with ``os.pread``;
    :class:`UnsupportedSlideError` when the chain loops back, points outside the file or is
    longer than ``max_pages`` (tifffile's page series would follow a loop for ever)."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 16, 0)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise UnsupportedSlideError(path, "not a TIFF file (no TIFF header)")
    version = struct.unpack(order + "H", head[2:4])[0]
    if version == 43 and len(head) == 16:  # BigTIFF: 8-byte counts and offsets, 20-byte entries
        count_fmt, off_fmt, entry, offset = "Q", "Q", 20, struct.unpack(order + "Q", head[8:16])[0]
    elif version == 42:
        count_fmt, off_fmt, entry, offset = "H", "I", 12, struct.unpack(order + "I", head[4:8])[0]
    else:
        raise UnsupportedSlideError(path, f"not a TIFF file (version {version})")
    count_size, off_size = struct.calcsize(count_fmt), struct.calcsize(off_fmt)
    seen: dict[int, int] = {}
    while offset:
        if offset in seen:
            raise DamagedTiffError(path, f"its TIFF directory chain loops: page {len(seen)} points back to "
                                              f"page {seen[offset]}; {DAMAGED}")
        if len(seen) >= max_pages:
            raise DamagedTiffError(path, f"its TIFF directory chain has more than {max_pages} pages; {DAMAGED}")
        raw = os.pread(fd, count_size, offset)
        if len(raw) < count_size or offset + count_size > size:
            raise DamagedTiffError(path, f"TIFF page {len(seen)} lies beyond the end of the file; {DAMAGED}")
        seen[offset] = len(seen)
        entries = struct.unpack(order + count_fmt, raw)[0]
        raw = os.pread(fd, off_size, offset + count_size + entries * entry)
        if len(raw) < off_size:
            raise DamagedTiffError(path, f"TIFF page {len(seen) - 1} is cut short; {DAMAGED}")
        offset = struct.unpack(order + off_fmt, raw)[0]
    return len(seen)


class TileCache:
    """A bounded, thread-safe LRU of decoded tiles keyed by ``(level, index, scale)``; the most
    recent tile stays even when it alone exceeds the capacity (wsi/limits.py counts it)."""

    def __init__(self, capacity: int = TILE_CACHE_BYTES) -> None:
        self._items: "OrderedDict[tuple[int, int, int], np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._capacity = capacity
        self._lock = threading.Lock()
        self._decoding: dict[tuple[int, int, int], list[Any]] = {}  # key -> [lock, threads using it]

    def get(self, key: tuple[int, int, int]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    @contextmanager
    def decoding(self, key: tuple[int, int, int]) -> Iterator[None]:
        """Held while ``key`` is decoded: threads needing the same chunk wait, then find it cached."""
        with self._lock:
            entry = self._decoding.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._decoding.pop(key, None)

    def put(self, key: tuple[int, int, int], value: np.ndarray) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self._capacity and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes


class TiffLevel:
    """Region reads from one tiled or stripped TIFF page (contig or planar RGB(A), uint8).

    Chunks are read with ``os.pread`` on the slide's own file descriptor (no lock; thread-safe)
    and decoded by tifffile's codecs (imagecodecs: libjpeg-turbo, OpenJPEG, zlib ...), which
    release the GIL, so reader threads decode in parallel.
    """

    def __init__(self, page: Any, fd: int, path: Path, level: int, cache: TileCache) -> None:
        self.page = page
        self._fd = fd
        self._path = path
        self._level = level
        self._cache = cache
        if page.dtype is None or np.dtype(page.dtype) != np.uint8:
            raise UnsupportedPixelsError(path, f"its pixels are {page.dtype}, not 8-bit")
        samples = int(page.samplesperpixel)
        if samples not in (3, 4):
            raise UnsupportedPixelsError(path, "its pixels are grey (1 sample per pixel)" if samples == 1 else
                                         f"its pixels have {samples} samples, not RGB(A)")
        self.samples = samples
        #: The fourth sample's meaning: "associated" (premultiplied; also libtiff's reading of an
        #: unspecified extra sample) or "unassociated" alpha; None for RGB.
        extra = tuple(page.extrasamples or (0,)) if samples == 4 else ()
        self.alpha = None if samples == 3 else ("unassociated" if extra[:1] == (2,) else "associated")
        self.separate = int(page.planarconfig) == 2
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        if page.is_tiled:
            self.chunk_w, self.chunk_h = int(page.tilewidth), int(page.tilelength)
        else:
            self.chunk_w, self.chunk_h = self.width, int(page.rowsperstrip or self.height)
        self.chunk_h = min(self.chunk_h, self.height) if not page.is_tiled else self.chunk_h
        self._check_structure(page, fd)
        self.compression = int(page.compression)
        self.photometric = int(page.photometric)
        # JPEG tiles inside a block are decoded by imagecodecs straight into a per-thread buffer
        # (no allocation, no cache: only tiles on block edges are shared between blocks), with
        # the colour spaces tifffile would use, so the pixels are the same as tifffile's.
        self._direct_jpeg: tuple[Any, Any] | None = None
        if self.compression == JPEG and not self.separate and page.is_tiled and int(page.bitspersample) == 8:
            try:
                from tifffile.tifffile import jpeg_decode_colorspace

                self._direct_jpeg = jpeg_decode_colorspace(
                    page.photometric, page.planarconfig, page.extrasamples, page.is_jfif)
            except Exception:  # an older tifffile: decode through page.decode
                self._direct_jpeg = None
        self._scratch = threading.local()
        self._jpeg_restarts = defines_restarts(page.jpegtables) if self.compression == JPEG else False

    def _check_structure(self, page: Any, fd: int) -> None:
        """Refuse, before any pixel is read, sizes and tables that would divide by zero, index
        past a table or read past the end of the file; sets ``across``, ``down`` and ``chunk_bytes``."""
        where = f"level {self._level}"
        if self.width < 1 or self.height < 1:
            raise DamagedTiffError(self._path, f"{where} claims {self.width} x {self.height} px, an empty "
                                               f"image; {DAMAGED}")
        tile_tags = [page.tags.get(code) for code in (322, 323)]  # TileWidth, TileLength
        if not page.is_tiled and any(tag is not None for tag in tile_tags):  # tifffile took 0 for "no tiles"
            tw, th = (tag.value if tag is not None else "no" for tag in tile_tags)
            raise DamagedTiffError(self._path, f"{where} claims tiles of {tw} x {th} px; {DAMAGED}")
        if self.chunk_w < 1 or self.chunk_h < 1:
            raise DamagedTiffError(self._path, f"{where} claims tiles of {self.chunk_w} x {self.chunk_h} px; "
                                               f"{DAMAGED}")
        self.across = -(-self.width // self.chunk_w)
        self.down = -(-self.height // self.chunk_h)
        #: Bytes of one decoded chunk (tile or strip): what a read holds at least (wsi/limits.py).
        self.chunk_bytes = self.chunk_w * self.chunk_h * self.samples
        needed = self.across * self.down * (self.samples if self.separate else 1)
        offsets, counts = page.dataoffsets, page.databytecounts
        listed = min(len(offsets), len(counts))
        if listed < needed:
            raise DamagedTiffError(self._path, f"{where}'s tile table lists {listed} tiles of the {needed} "
                                               f"its size needs; {DAMAGED}")
        ends = np.asarray(offsets[:needed], np.float64) + np.asarray(counts[:needed], np.float64)
        size = os.fstat(fd).st_size
        beyond = np.flatnonzero(ends > size)
        if beyond.size:
            index = int(beyond[0])
            raise DamagedTiffError(self._path, f"tile {index} of {where} claims {int(counts[index])} bytes "
                                               f"at offset {int(offsets[index])}, beyond the end of the "
                                               f"{size}-byte file (cut short, or its tables are wrong); {DAMAGED}")

    def dct_scales(self) -> tuple[int, ...]:
        """Power-of-two reductions libjpeg can decode in the DCT domain for this level."""
        if self.compression != JPEG or self.separate or not self.page.is_tiled:
            return ()
        return tuple(s for s in (2, 4, 8) if self.chunk_w % s == 0 and self.chunk_h % s == 0)

    def _raw(self, index: int) -> bytes:
        offset, count = int(self.page.dataoffsets[index]), int(self.page.databytecounts[index])
        data = os.pread(self._fd, count, offset)
        if len(data) != count or count == 0:
            raise SlideReadError(self._path, f"TIFF chunk {index} of level {self._level} is truncated")
        if self.compression == JPEG:  # imagecodecs hides libjpeg's warnings; OpenSlide fails on them
            problem = jpeg_problem(data, restarts_in_tables=self._jpeg_restarts)
            if problem:
                column, row = index % self.across, (index // self.across) % self.down
                raise SlideReadError(self._path, f"JPEG tile {index} of level {self._level} (column {column}, row "
                                                 f"{row}) is corrupt: {problem}; the slide file is damaged")
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
        """One decoded chunk, from the cache, or decoded by one thread while the others that need
        it wait (a 32768 px tile shared by 256 blocks is decoded once, not once per thread)."""
        key = (self._level, index, scale)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._cache.decoding(key):
            cached = self._cache.get(key)
            return cached if cached is not None else self._decode_chunk(key, index, scale)

    def _decode_chunk(self, key: tuple[int, int, int], index: int, scale: int) -> np.ndarray:
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
        except MemoryError as exc:
            raise SlideReadError(self._path, self._no_memory(index)) from exc
        except Exception as exc:  # codec errors on corrupt data
            raise SlideReadError(self._path, f"decoding TIFF chunk {index} of level {self._level} "
                                 f"failed: {exc or type(exc).__name__}") from exc
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
        except MemoryError as exc:
            raise SlideReadError(self._path, self._no_memory(index)) from exc
        except Exception as exc:
            raise SlideReadError(self._path, f"decoding TIFF chunk {index} of level {self._level} "
                                 f"failed: {exc or type(exc).__name__}") from exc
        return scratch

    def _no_memory(self, index: int) -> str:
        return (f"decoding TIFF chunk {index} of level {self._level} ({self.chunk_w} x {self.chunk_h} px, "
                f"{self.chunk_bytes / 1e9:.1f} GB decoded) needs more memory than is free; process the slide "
                "on a machine with more memory, or re-export it with smaller tiles")

    def read(self, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        """RGB pixels of the region in level coordinates divided by ``scale`` (DCT scaling); an
        alpha channel is composited on white, as OpenSlide does (:func:`rgba_to_rgb`)."""
        channels = 4 if self.alpha else 3
        out = np.empty((height, width, channels), dtype=np.uint8)
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
                    planes = [self._chunk(s * per_plane + r * self.across + c)[..., 0] for s in range(channels)]
                    chunk = np.stack(planes, axis=-1)
                elif inside and scale == 1 and self._direct_jpeg is not None:
                    chunk = self._decode_jpeg_into_scratch(r * self.across + c)
                else:
                    chunk = self._chunk(r * self.across + c, scale)
                out[iy0 - y : iy1 - y, ix0 - x : ix1 - x] = chunk[
                    iy0 - cy : iy1 - cy, ix0 - cx : ix1 - cx, :channels
                ]
        return rgba_to_rgb(out, DEFAULT_BACKGROUND, premultiplied=self.alpha == "associated") if self.alpha else out


def largest_chunk(levels: list[TiffLevel]) -> tuple[int, int]:
    """Bytes of the largest decoded chunk among ``levels``, and the number of chunks in its level."""
    return max(((lv.chunk_bytes, lv.across * lv.down) for lv in levels), default=(0, 1))


def tiff_levels(tif: Any, fd: int, path: Path) -> list[TiffLevel]:
    """The levels of the first series (its pyramid) of an open TIFF, sharing one tile cache."""
    check_ifd_chain(fd, path)  # before tifffile walks the chain: a loop would never end
    series = tif.series[0]
    levels = getattr(series, "levels", None) or [series]
    cache = TileCache()
    return [TiffLevel(level.keyframe, fd, path, i, cache) for i, level in enumerate(levels)]
