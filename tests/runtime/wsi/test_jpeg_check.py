"""The fast TIFF path fails on JPEG tiles with lost data exactly where OpenSlide does: tiles with
restart markers (cv2 writes them) cut short, with a restart interval cut out or the last ones
lost, compared on both decoding paths; and the marker checks one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tseg.runtime.errors import SlideReadError
from tseg.runtime.wsi.jpeg_check import jpeg_problem
from tseg.runtime.wsi.slide import open_slide

TILE = 256
DAMAGED = 5  # the damaged tile (in the tissue of the image below)


def _image() -> np.ndarray:
    from helpers import textured_rgb

    img = np.full((768, 1024, 3), 240, np.uint8)
    img[100:700, 100:900] = textured_rgb(600, 800, seed=1)
    return img


def _encode(tile: np.ndarray) -> bytes:
    import cv2

    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 4])
    assert ok
    return enc.tobytes()


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "cut short":
        return data[: len(data) // 2]
    if kind == "restart interval cut out":
        return data[: data.find(b"\xff\xd2")] + data[data.find(b"\xff\xd4"):]
    if kind == "last intervals lost":
        return data[: data.rfind(b"\xff\xd3")] + b"\xff\xd9"
    if kind == "bytes after the last interval":  # libjpeg does not warn: neither path fails
        return data[:-2] + b"\x12\x34\x56" + data[-2:]
    return data


def _write(path: Path, image: np.ndarray, kind: str) -> Path:
    import tifffile

    h, w = image.shape[:2]

    def tiles():
        index = 0
        for y in range(0, h, TILE):
            for x in range(0, w, TILE):
                data = _encode(image[y : y + TILE, x : x + TILE])
                yield _damage(kind, data) if index == DAMAGED else data
                index += 1

    with tifffile.TiffWriter(path) as tif:  # full JPEG streams as tiles, YCbCr 4:2:0, as cv2 writes them
        tif.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), compression="jpeg",
                  photometric="ycbcr", subsampling=(2, 2), resolution=(1e4 / 0.5, 1e4 / 0.5),
                  resolutionunit="CENTIMETER")
    return path


@pytest.mark.parametrize("kind, fails", [("intact", False), ("bytes after the last interval", False),
                                         ("cut short", True), ("restart interval cut out", True),
                                         ("last intervals lost", True)])
def test_both_decoding_paths_agree(tmp_path, kind, fails):
    path = _write(tmp_path / "s.tiff", _image(), kind)
    outcome = {}
    for decoder in ("auto", "openslide"):
        with open_slide(path, decoder=decoder) as slide:
            assert slide.decoder == {"auto": "tifffile", "openslide": "openslide"}[decoder]
            try:
                slide.read(0.5)
                outcome[decoder] = "read"
            except SlideReadError as exc:
                outcome[decoder] = str(exc)
    assert (outcome["auto"] != "read") == fails and (outcome["openslide"] != "read") == fails, outcome
    if fails:
        assert f"JPEG tile {DAMAGED} of level 0 (column 1, row 1)" in outcome["auto"], outcome


def test_marker_checks():
    good = _encode(_image()[:TILE, :TILE])
    assert jpeg_problem(good) is None
    assert "start-of-image" in jpeg_problem(b"\x00" + good)
    sos = good.find(b"\xff\xda")
    assert "garbage" in jpeg_problem(good[:sos] + b"\x00\x01" + good[sos:])
    assert "runs past the end" in jpeg_problem(good[:sos + 5])
    assert "no image data" in jpeg_problem(good[:sos] + b"\xff\xd9")
    assert "Premature end of JPEG file" in jpeg_problem(good[:-2])
    tables = good[:sos] + b"\xff\xd9"  # a JPEGTables-like stream
    assert jpeg_problem(tables, tables=True) is None


def test_tiles_without_restart_markers_take_the_short_path():
    """No restart interval in the tables or the tile: a baseline tile is whole when it ends with
    its end-of-image marker; cut anywhere, it is not."""
    import cv2

    ok, enc = cv2.imencode(".jpg", _image()[:TILE, :TILE], [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = enc.tobytes()
    assert b"\xff\xdd" not in data
    assert jpeg_problem(data, restarts_in_tables=False) is None
    for cut in (len(data) // 2, len(data) - 1, len(data) - 2):
        assert "Premature end of JPEG file" in jpeg_problem(data[:cut], restarts_in_tables=False)
    assert jpeg_problem(data + b"\x00\x00", restarts_in_tables=False) is None  # padding after the end marker

