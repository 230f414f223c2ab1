"""The viewer's Deep Zoom geometry and tiles, against openslide-python's ``DeepZoomGenerator``
on the same real slide file, and the bounded tile cache."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator

from helpers import make_square_slide
from tseg.runtime.service.viewer.deepzoom import DeepZoom, TileOutOfRange
from tseg.runtime.service.viewer.tiles import ArrayImage, TileCache, mask_rgba, read_area
from tseg.runtime.wsi.slide import open_slide


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    return make_square_slide(tmp_path_factory.mktemp("dz") / "a.tiff", width_um=1500, height_um=1130)


@pytest.mark.parametrize("size,tile,overlap", [((3000, 2260), 254, 1), ((1, 1), 254, 1), ((257, 3), 256, 0),
                                               ((1000, 999), 510, 2)])
def test_geometry_is_deepzoomgenerators(size, tile, overlap, tmp_path):
    """Level count, level sizes, tiles per level and every tile's size (overlap included) are
    DeepZoomGenerator's, on a real file OpenSlide reads."""
    from tseg.runtime.outputs.pyramid_tiff import write_pyramid

    path = tmp_path / "s.tiff"
    write_pyramid(path, [np.full((size[1], size[0], 3), 200, np.uint8)], 0.5)
    with openslide.OpenSlide(str(path)) as osr:
        ref = DeepZoomGenerator(osr, tile_size=tile, overlap=overlap)
        dz = DeepZoom(*size, tile_size=tile, overlap=overlap)
        assert dz.level_count == ref.level_count
        assert dz.level_dimensions == list(ref.level_dimensions)
        assert dz.level_tiles == list(ref.level_tiles)
        for level in range(dz.level_count):
            cols, rows = dz.level_tiles[level]
            for col in {0, cols // 2, cols - 1}:
                for row in {0, rows // 2, rows - 1}:
                    _, _, w, h = dz.tile_box(level, col, row)
                    # the size it renders (get_tile's thumbnail() may then shrink a 3 x 3 px tile to keep
                    # the aspect ratio of the area it read, so compare with what it asks for)
                    assert (w, h) == ref._get_tile_info(level, (col, row))[1], (level, col, row)


def test_dzi_and_out_of_range(slide_file):
    dz = DeepZoom(3000, 2260)
    with openslide.OpenSlide(str(slide_file["path"])) as osr:
        ref = ET.fromstring(DeepZoomGenerator(osr).get_dzi("jpeg"))
    ours = ET.fromstring(dz.dzi())
    assert ours.tag == ref.tag and ours.attrib == ref.attrib
    assert ours[0].attrib == ref[0].attrib and ours[0].tag == ref[0].tag
    for bad in ((dz.level_count, 0, 0), (-1, 0, 0), (dz.level_count - 1, 12, 0), (dz.level_count - 1, 0, 9),
                (3, -1, 0)):
        with pytest.raises(TileOutOfRange):
            dz.tile_box(*bad)


def test_tiles_match_deepzoomgenerator_pixels(slide_file):
    """The same tiles from tseg-rt's reader (exact area average) and from DeepZoomGenerator
    (OpenSlide + Lanczos) at level 0 and at 1/4 and 1/16 zoom agree to a few grey levels."""
    with openslide.OpenSlide(str(slide_file["path"])) as osr, open_slide(slide_file["path"]) as slide:
        ref = DeepZoomGenerator(osr)
        dz = DeepZoom(*slide.dimensions)
        top = dz.level_count - 1
        for level in (top, top - 2, top - 4):
            cols, rows = dz.level_tiles[level]
            for col, row in {(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}:
                _, _, w, h = dz.tile_box(level, col, row)
                ours = read_area(slide.source, dz.level0_box(level, col, row), (w, h)).astype(np.float32)
                theirs = np.asarray(ref.get_tile(level, (col, row)), np.float32)
                assert ours.shape == theirs.shape
                assert np.abs(ours - theirs).mean() < 6.0, (level, col, row)
                if level == top:  # level 0: the very pixels
                    assert np.abs(ours - theirs).max() == 0


def test_mask_layer_is_fill_and_contour():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 255
    rgba = mask_rgba(read_area(ArrayImage(mask), (0, 0, 60, 40), (120, 80)), (230, 159, 0))
    assert rgba.shape == (80, 120, 4)
    assert rgba[40, 70, 3] == 90 and rgba[20, 40, 3] == 255 and rgba[0, 0, 3] == 0  # fill, contour, nothing
    assert tuple(rgba[40, 70, :3]) == (230, 159, 0)


def test_cache_is_bounded_and_renders_once():
    cache = TileCache(max_bytes=1000)
    calls = []

    def make(i):
        return lambda: calls.append(i) or bytes(300)

    for i in range(10):
        cache.get(("a", i), make(i))
    assert cache.bytes <= 1000 and len(calls) == 10
    cache.get(("a", 9), make(9))
    assert len(calls) == 10 and cache.hits == 1  # the latest are kept
    cache.get(("a", 0), make(0))
    assert len(calls) == 11  # the oldest were dropped
    cache.drop(("a",))
    assert cache.bytes == 0
