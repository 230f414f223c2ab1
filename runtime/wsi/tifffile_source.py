"""TIFF slides read with tifffile: OME-TIFF and TIFFs OpenSlide refuses (:class:`TiffFileSource`),
and the TIFF-family slides OpenSlide opens, with OpenSlide's metadata but tiles decoded directly
(:class:`DirectTiffSource`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tseg.runtime.errors import UnsupportedSlideError
from tseg.runtime.util.safeio import open_fd, open_regular
from tseg.runtime.wsi.mpp import ome_mpp, tiff_tag_mpp
from tseg.runtime.wsi.openslide_source import OpenSlideSource
from tseg.runtime.wsi.base import DEFAULT_BACKGROUND
from tseg.runtime.wsi.tiff_decode import (DamagedTiffError, TiffLevel, TileCache, check_ifd_chain, largest_chunk,
                                          tiff_levels)

log = logging.getLogger(__name__)


class TiffFileSource:
    """OME-TIFF pyramids (as QuPath and bfconvert write them) and TIFFs OpenSlide cannot open
    (e.g. stripped), read with tifffile; resolution from OME or the TIFF resolution tags."""

    def __init__(self, path: Path) -> None:
        import tifffile

        self._tif = tifffile.TiffFile(str(path))
        self._fd = open_fd(path)  # regular files only, never blocking (safeio)
        try:
            self.tiff_levels = tiff_levels(self._tif, self._fd, path)
        except UnsupportedSlideError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many types for odd files
            self.close()
            raise UnsupportedSlideError(path, f"tifffile cannot read the image: {exc}") from exc
        self.vendor = "ome-tiff" if self._tif.is_ome else "tiff"
        self.level_dimensions = [(lv.width, lv.height) for lv in self.tiff_levels]
        self.background = DEFAULT_BACKGROUND
        self.properties = {"tseg.reader": "tifffile", "tseg.vendor": self.vendor}
        self._mpp = self._read_mpp()


    def _read_mpp(self) -> tuple[float | None, float | None]:
        if self._tif.is_ome and self._tif.ome_metadata:
            return ome_mpp(self._tif.ome_metadata, self.properties)
        return tiff_tag_mpp(self._tif.pages[0].tags)

    def mpp(self) -> tuple[float | None, float | None]:
        return self._mpp

    def largest_chunk(self) -> tuple[int, int]:
        """Bytes of the largest decoded tile or strip, and the number of chunks in its level."""
        return largest_chunk(self.tiff_levels)

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        return self.tiff_levels[level].read(x, y, width, height, scale)

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return self.tiff_levels[level].dct_scales()

    def associated_images(self) -> list[str]:
        return []

    def close(self) -> None:
        self._tif.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: TIFF compressions whose tifffile/imagecodecs decoding was checked identical to OpenSlide's
#: (tests/runtime/wsi/test_slide.py: generated none/LZW/deflate/JPEG slides, the real Aperio JPEG
#: and JPEG 2000 (RGB, 33005) SVS; 32946 is deflate's old code). Everything else, e.g.
#: Aperio's YCbCr JPEG 2000 (33003), whose colours OpenSlide converts itself, stays with OpenSlide.
DIRECT_COMPRESSIONS = {1, 5, 7, 8, 32946, 33005}
DIRECT_VENDORS = {"aperio", "generic-tiff"}


class DirectTiffSource(OpenSlideSource):
    """A TIFF-family slide (Aperio SVS, generic tiled TIFF) whose metadata come from OpenSlide
    and whose pixels are decoded straight from the TIFF tiles by tifffile + imagecodecs.

    Same levels, MPP, properties and background as OpenSlide; the decoded pixels are identical
    (checked per compression, see :data:`DIRECT_COMPRESSIONS`) and come 1.8-7x faster in
    ``benchmarks/peers.py``, and reader threads decode in parallel. One difference: OpenSlide
    reads a level whose downsample is not whole at a sub-pixel shift (it converts through
    level-0 coordinates); this reads the level's own pixels.
    """

    def __init__(self, path: Path, opened: OpenSlideSource, tif: Any, fd: int, levels: list[TiffLevel]) -> None:
        self.__dict__.update(opened.__dict__)
        self._tif, self._fd, self.tiff_levels = tif, fd, levels
        self.properties = dict(self.properties, **{"tseg.decoder": "tifffile"})

    @classmethod
    def wrap(cls, path: Path, opened: OpenSlideSource, direct: bool = True) -> "OpenSlideSource":
        """``opened`` with direct decoding when the TIFF is one we can decode identically (and
        ``direct``); :class:`DamagedTiffError` when its structure is impossible, on either path."""
        if opened.vendor not in DIRECT_VENDORS:
            return opened
        import tifffile

        tif = fd = None
        try:
            tif = tifffile.TiffFile(str(path))
            fd = open_fd(path)
            check_ifd_chain(fd, path)
            # OpenSlide's levels of these formats are tiled pages of the main IFD chain: match
            # them by size (tifffile's own pyramid detection misses non-2x pyramids).
            pages = [pg for pg in tif.pages if pg.is_tiled]
            cache = TileCache()
            levels = []
            for i, (w, h) in enumerate(opened.level_dimensions):
                page = next((pg for pg in pages if (int(pg.imagewidth), int(pg.imagelength)) == (w, h)), None)
                if page is None:
                    break
                levels.append(TiffLevel(page, fd, path, i, cache))
            same = [(lv.width, lv.height) for lv in levels] == list(opened.level_dimensions)
            usable = all(lv.page.is_tiled and lv.compression in DIRECT_COMPRESSIONS
                         and not lv.separate and lv.photometric in (2, 6) for lv in levels)
            if same and usable and direct:
                return cls(path, opened, tif, fd, levels)
            log.debug("%s: tifffile levels or codecs differ from OpenSlide's; decoding with OpenSlide", path)
        except DamagedTiffError:  # refused on every decoding path, never read as OpenSlide guesses
            if tif is not None:
                tif.close()
            if fd is not None:
                os.close(fd)
            opened.close()
            raise
        except Exception as exc:  # anything odd: OpenSlide decodes as before
            log.debug("%s: direct TIFF decoding unavailable (%s); using OpenSlide", path, exc)
        if tif is not None:
            tif.close()
        if fd is not None:
            os.close(fd)
        return opened

    def read_level(self, level: int, x: int, y: int, width: int, height: int, scale: int = 1) -> np.ndarray:
        return self.tiff_levels[level].read(x, y, width, height, scale)

    def dct_scales(self, level: int) -> tuple[int, ...]:
        return self.tiff_levels[level].dct_scales()

    def largest_chunk(self) -> tuple[int, int]:
        """Bytes of the largest decoded tile, and the number of tiles in its level."""
        return largest_chunk(self.tiff_levels)

    def close(self) -> None:
        super().close()
        self._tif.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def is_ome_tiff(path: Path) -> bool:
    """Whether ``path`` is a TIFF whose metadata is OME-XML (read with tifffile, never OpenSlide)."""
    try:
        with open_regular(path) as fh:
            header = fh.read(4)
        if header[:2] not in (b"II", b"MM"):
            return False
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            return bool(tif.is_ome)
    except Exception:
        return False
