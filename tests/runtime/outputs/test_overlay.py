"""The overlay picture, checked from its pixels: a generated slide (known tissue and tumour, a hole
punched into the tumour) at 5 µm/px, drawn in every style."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.evaluation.synthetic import SyntheticSlide
from tseg.runtime.execution.segmenter import DEFAULT_OVERLAY_OPACITY, OVERLAY_STYLES
from tseg.runtime.method.polygons import TUMOUR_COLOUR
from tseg.runtime.outputs.overlay import (
    OverlayLegend,
    colour_lut,
    draw_map,
    legend_font_px,
    render_overlay,
)

UM_PER_PX = 5.0  # the overview's resolution (paper: 5 µm/px)
SIZE = (1200, 800)  # 6 x 4 mm


@pytest.fixture(scope="module")
def maps():
    """Overview, probability, tumour mask (with a hole) and tissue mask of a generated slide."""
    slide = SyntheticSlide(seed=7, width_um=SIZE[0] * UM_PER_PX, height_um=SIZE[1] * UM_PER_PX, n_tumours=1)
    overview = slide.render(0, 0, SIZE[0], SIZE[1], UM_PER_PX)
    tissue = slide.tissue_mask(SIZE)
    tumour = slide.tumour_mask(SIZE) & tissue
    inside = cv2.distanceTransform(tumour.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(inside), inside.shape)
    radius = int(inside[y, x] // 3)
    assert radius >= 8, "the generated tumour is too small for a hole"
    hole = np.zeros(tumour.shape, np.uint8)
    cv2.circle(hole, (int(x), int(y)), radius, 1, -1)
    tumour &= hole == 0
    probability = np.where(tumour, 240, np.where(tissue, 30, 0)).astype(np.uint8)
    return overview, probability, tumour, tissue


def legend(**kw):
    return OverlayLegend(**{"title": "Präparat µ-7.svs", "pixel_um": UM_PER_PX, "low": 85, "high": 229,
                            "prune": True, **kw})


def away_from_border(mask: np.ndarray, px: int = 5) -> np.ndarray:
    """Pixels of ``mask`` more than ``px`` pixels from its border (where no contour is drawn)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def is_colour(image: np.ndarray, colour) -> np.ndarray:
    return np.all(image == np.array(colour, np.uint8), axis=-1)


def test_tissue_under_the_tumour_keeps_its_texture(maps):
    overview, probability, tumour, tissue = maps
    under = away_from_border(tumour)
    rest = away_from_border(tissue & ~tumour)
    grey = cv2.cvtColor(overview, cv2.COLOR_RGB2GRAY).astype(np.float64)
    for style in OVERLAY_STYLES:
        picture = draw_map(overview, probability, tumour, tissue, style=style)
        drawn = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float64)
        # The texture (variance) under the tumour keeps (1 - 0.35)^2 = 42 % of the slide's there,
        # and stays a large fraction of the unmasked tissue's.
        kept = drawn[under].var() / grey[under].var()
        assert kept >= (1 - DEFAULT_OVERLAY_OPACITY) ** 2 - 0.02, (style, kept)
        assert drawn[under].var() >= 0.4 * drawn[rest].var(), style
        if style == "contour":  # the tissue is untouched
            assert np.array_equal(picture[under], overview[under])


def test_the_opacity_is_what_was_asked(maps):
    overview, probability, tumour, tissue = maps
    under = away_from_border(tumour)
    clear = draw_map(overview, probability, tumour, tissue, style="fill", opacity=0.0)
    assert np.array_equal(clear[under], overview[under])
    opaque = draw_map(overview, probability, tumour, tissue, style="fill", opacity=1.0)
    assert is_colour(opaque[under], TUMOUR_COLOUR).all()
    half = draw_map(overview, probability, tumour, tissue, style="fill", opacity=0.5)
    expected = np.rint(overview[under] * 0.5 + np.array(TUMOUR_COLOUR) * 0.5)
    assert np.abs(half[under].astype(int) - expected).max() <= 1


def test_the_contour_lies_on_the_mask_border_holes_included(maps):
    overview, probability, tumour, tissue = maps
    for style in OVERLAY_STYLES:
        picture = draw_map(overview, probability, tumour, tissue, style=style)
        line = is_colour(picture, TUMOUR_COLOUR)
        # Chessboard distance of each pixel to the other side of the mask's border.
        d_in = cv2.distanceTransform(tumour.astype(np.uint8), cv2.DIST_C, 3)
        d_out = cv2.distanceTransform((~tumour).astype(np.uint8), cv2.DIST_C, 3)
        to_border = np.where(tumour, d_in, d_out)
        assert line.any() and to_border[line].max() <= 2, style
        # Every pixel of the border (the outline and the hole's) is on the line.
        border = tumour & (d_in == 1)
        assert line[border].all(), style
        hole = cv2.floodFill((~tumour).astype(np.uint8), None, (0, 0), 0)[1] > 0  # background not reached from outside
        hole_border = tumour & (cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        assert hole.any() and hole_border.any() and line[hole_border].all(), style
        # A black halo on both sides of the line keeps it crisp on any colour.
        halo = is_colour(picture, (0, 0, 0)) & (to_border <= 3)
        ring = (cv2.dilate(line.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~line
        assert halo[ring].mean() > 0.95, style


def test_the_background_outside_the_tissue_is_dimmed(maps):
    overview, probability, tumour, tissue = maps
    picture = draw_map(overview, probability, tumour, tissue)
    background = away_from_border(~tissue)
    drawn = picture[background].astype(int)
    assert (drawn[:, 0] == drawn[:, 1]).all() and (drawn[:, 1] == drawn[:, 2]).all()  # grey
    assert drawn.mean() < overview[background].astype(int).mean() - 30  # and darker
    tissue_only = away_from_border(tissue & ~tumour)
    assert np.array_equal(picture[tissue_only], overview[tissue_only])  # tissue outside the tumour untouched


def test_the_heat_map_is_cividis_over_the_tissue(maps):
    overview, probability, tumour, tissue = maps
    a = 0.4
    picture = draw_map(overview, probability, tumour, tissue, style="heatmap", opacity=a)
    lut = colour_lut().astype(np.float64)
    for where in (away_from_border(tumour), away_from_border(tissue & ~tumour)):
        expected = np.rint(overview[where] * (1 - a) + lut[probability[where]] * a)
        assert np.abs(picture[where].astype(int) - expected).max() <= 1
    from matplotlib import colormaps

    assert np.allclose(lut[[0, 128, 255]] / 255, colormaps["cividis"]([0, 128, 255])[:, :3], atol=0.5 / 255)


def dark_rows(region: np.ndarray, level: int = 100) -> list[tuple[int, int]]:
    """Runs of rows (start, end) that hold dark (text or bar) pixels."""
    rows = (region.max(axis=2) < level).any(axis=1)
    runs, start = [], None
    for i, on in enumerate(list(rows) + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    return runs


def longest_black_run(region: np.ndarray) -> tuple[int, int, int]:
    """(length, row, end column) of the longest horizontal run of pure black pixels."""
    black = is_colour(region, (0, 0, 0))
    best = (0, 0, 0)
    for y in range(black.shape[0]):
        padded = np.concatenate([[0], black[y].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        for s, e in zip(edges[::2], edges[1::2]):
            best = max(best, (int(e - s), y, int(e)))
    return best


def text_image(text: str, px: int) -> np.ndarray:
    """``text`` drawn as the legend draws it (DejaVu Sans, black on white), tightly cropped."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), px)
    canvas = Image.new("L", (px * len(text) + 20, px * 2), 255)
    ImageDraw.Draw(canvas).text((10, px // 2), text, fill=0, font=font)
    a = np.asarray(canvas)
    ys, xs = np.nonzero(a < 128)
    return a[ys.min() - 1 : ys.max() + 2, xs.min() - 1 : xs.max() + 2]


def test_legend_scale_bar_and_title_below_the_map(maps):
    overview, probability, tumour, tissue = maps
    h, w = tumour.shape
    picture = render_overlay(overview, probability, tumour, tissue, legend=legend())
    assert picture.shape[1] == w and picture.shape[0] > h + 3 * legend_font_px(w, h)
    assert np.array_equal(picture[:h], draw_map(overview, probability, tumour, tissue))  # the map is intact
    below = picture[h:]
    assert len(dark_rows(below)) >= 4  # title and scale bar, entries, thresholds, notes
    # The scale bar: a quarter of 1200 px at 5 µm/px is 1.5 mm, so the bar is 1 mm = 200 px,
    # at the right, and labelled "1 mm" just above it.
    length, row, end = longest_black_run(below)
    assert length == round(1000 / UM_PER_PX) and end > w - 40
    px = legend_font_px(w, h)
    above = cv2.cvtColor(np.ascontiguousarray(below[max(0, row - 3 * px) : row, end - length : end]),
                         cv2.COLOR_RGB2GRAY)
    scores = {label: max(cv2.matchTemplate(above, text_image(label, size), cv2.TM_CCOEFF_NORMED).max()
                         for size in range(px - 4, px + 5))  # the text size depends on the legend's length
              for label in ("0.5 mm", "1 mm", "2 mm", "5 mm")}
    assert max(scores, key=scores.get) == "1 mm" and scores["1 mm"] > 0.95, scores
    # The tumour swatch is drawn like the map: the contour colour is in the legend.
    assert is_colour(below, TUMOUR_COLOUR).any()


def test_heat_map_legend_has_its_colour_bar(maps):
    overview, probability, tumour, tissue = maps
    h = tumour.shape[0]
    below = render_overlay(overview, probability, tumour, tissue, style="heatmap", legend=legend())[h:]
    lut = colour_lut().astype(int)
    found = []
    for level in (0, 128, 255):
        hits = np.argwhere(np.abs(below.astype(int) - lut[level]).max(axis=2) <= 2)
        assert len(hits), level
        found.append(np.median(hits[:, 1]))
    assert found[0] < found[1] < found[2]  # 0 % on the left, 100 % on the right
    plain = render_overlay(overview, probability, tumour, tissue, style="fill", legend=legend())[h:]
    assert not (np.abs(plain.astype(int) - lut[0]).max(axis=2) <= 2).any()


@pytest.mark.parametrize("size", [(1000, 700), (1800, 1000), (2000, 1400)])
def test_legend_text_stays_legible_on_1000_to_2000_px_pictures(size):
    w, h = size
    rng = np.random.default_rng(0)
    overview = rng.integers(150, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 3 : h // 2, w // 3 : w // 2] = True
    picture = render_overlay(overview, (mask * 250).astype(np.uint8), mask, np.ones((h, w), bool),
                             legend=legend(notes=("Model m.onnx (sha256 0123456789ab) on onnxruntime.",)))
    # Fitted to a 1600 x 1000 screen, every line of text is at least 14 px from ascender to descender.
    fit = min(1.0, 1600 / picture.shape[1], 1000 / picture.shape[0])
    lines = [e - s for s, e in dark_rows(picture[h:])]
    assert len(lines) >= 4 and min(lines) * fit >= 14, (lines, fit)


def test_without_a_legend_the_picture_is_the_map_and_narrow_maps_widen(maps):
    overview, probability, tumour, tissue = maps
    assert render_overlay(overview, probability, tumour, tissue).shape == overview.shape
    narrow = (slice(0, 600), slice(500, 700))
    picture = render_overlay(overview[narrow], probability[narrow], tumour[narrow], tissue[narrow], legend=legend())
    assert picture.shape[1] > 200 and np.array_equal(picture[:600, :200],
                                                     draw_map(overview[narrow], probability[narrow], tumour[narrow],
                                                              tissue[narrow]))
    long = render_overlay(overview[narrow], probability[narrow], tumour[narrow], tissue[narrow],
                          legend=legend(notes=("a long note " * 40, "END")))  # wrapped, nothing cut off
    lines = dark_rows(long[600:])
    assert len(lines) >= len(dark_rows(picture[600:])) + 8 and long.shape[0] - 600 - lines[-1][1] < 40
    empty = np.zeros(tumour.shape, bool)  # no tumour: no contour, still a legend
    picture = render_overlay(overview, probability, empty, tissue, legend=legend())
    assert not is_colour(picture[: tumour.shape[0]], TUMOUR_COLOUR).any()


def test_bad_arguments_are_named(maps):
    overview, probability, tumour, tissue = maps
    with pytest.raises(InvalidArgumentError, match="overlay style must be one of fill, contour, heatmap"):
        draw_map(overview, probability, tumour, tissue, style="opaque")
    with pytest.raises(InvalidArgumentError, match="opacity"):
        draw_map(overview, probability, tumour, tissue, opacity=1.5)
    with pytest.raises(InvalidArgumentError, match="mask must be"):
        draw_map(overview, probability, tumour[:10], tissue)
    with pytest.raises(InvalidArgumentError, match="pixel_um"):
        render_overlay(overview, probability, tumour, tissue, legend=legend(pixel_um=0))
