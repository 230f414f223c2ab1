"""Reconstruction from tiles, from the paper's *Reconstruction from tiles* section."""

from __future__ import annotations

import numpy as np
import pytest

from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.method.merge import (
    CellMerger,
    TileMerger,
    merger_for,
    grid_axes,
    merge_tiles,
    merge_tiles_reference,
    normalised_weight_tiles,
    side_weights,
)
from tseg.runtime.method.tiling import Tile, plan_tiles


def weight_sum(tiles, h, w):
    total = np.zeros((h, w))
    for t, wt in zip(tiles, normalised_weight_tiles(tiles, h, w)):
        total[t.y : t.y_end, t.x : t.x_end] += wt
    return total


def irregular_tiles(seed: int, h: int = 60, w: int = 80):
    """Random boxes that together cover an h x w image."""
    rng = np.random.default_rng(seed)
    tiles = []
    covered = np.zeros((h, w), bool)
    while not covered.all():
        ys, xs = np.nonzero(~covered)
        y0, x0 = int(ys[0]), int(xs[0])
        y0 = max(0, y0 - int(rng.integers(0, 6)))
        x0 = max(0, x0 - int(rng.integers(0, 6)))
        th = int(min(h - y0, rng.integers(8, 30)))
        tw = int(min(w - x0, rng.integers(8, 30)))
        tiles.append(Tile(0, len(tiles), x0, y0, tw, th))
        covered[y0 : y0 + th, x0 : x0 + tw] = True
    return tiles


@pytest.mark.parametrize("seed", range(6))
def test_weights_sum_to_one_on_irregular_plans(seed):
    tiles = irregular_tiles(seed)
    np.testing.assert_allclose(weight_sum(tiles, 60, 80), 1.0, atol=1e-6)


@pytest.mark.parametrize("w,h,t,o", [(100, 70, 40, 10), (7, 7, 3, 2), (90, 90, 30, 0), (33, 65, 32, 5)])
def test_weights_sum_to_one_on_listing1_plans(w, h, t, o):
    plan = plan_tiles(w, h, t, o)
    np.testing.assert_allclose(weight_sum(plan.tiles, h, w), 1.0, atol=1e-6)
    for wt in normalised_weight_tiles(plan.tiles, h, w):
        assert (wt > 0).all() and (wt <= 1 + 1e-12).all()


def test_ramp_values_by_hand():
    # Width 16, tiles of 10 with overlap >= 4: starts 0 and 6, overlap [6, 10) of length l = 4.
    plan = plan_tiles(16, 10, 10, 4)
    assert [t.x for t in plan] == [0, 6]
    wy, wx = side_weights(plan.tiles, 0)
    np.testing.assert_array_equal(wy, np.ones(10))
    # Pixels before the overlap get 1; inside, v = 1 - d / (l + 1) with d = 1 .. l.
    np.testing.assert_allclose(wx, [1, 1, 1, 1, 1, 1, 1 - 1 / 5, 1 - 2 / 5, 1 - 3 / 5, 1 - 4 / 5])
    _, wx1 = side_weights(plan.tiles, 1)
    np.testing.assert_allclose(wx1[:4], [1 / 5, 2 / 5, 3 / 5, 4 / 5])
    np.testing.assert_allclose(wx1[4:], 1.0)


def test_corner_weights_are_products_of_sides():
    plan = plan_tiles(16, 16, 10, 4)  # 2 x 2 tiles, overlaps [6, 10) both ways
    wy, wx = side_weights(plan.tiles, 0)
    initial = np.outer(wy, wx)
    # Pixel (8, 9): bottom d = 3, right d = 4.
    assert initial[8, 9] == pytest.approx((1 - 3 / 5) * (1 - 4 / 5))


def test_constant_image_round_trips_exactly():
    plan = plan_tiles(200, 130, 64, 16)
    for value in (0, 1, 127, 254, 255):
        out = merge_tiles(130, 200, [(t, np.full((t.height, t.width), value, np.uint8)) for t in plan])
        assert (out == value).all()


def test_tile_content_is_placed_where_there_is_no_overlap():
    plan = plan_tiles(100, 40, 40, 10)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 100), dtype=np.uint8)
    out = merge_tiles(40, 100, [(t, image[t.y : t.y_end, t.x : t.x_end]) for t in plan])
    # Every tile is a crop of the same image, so any convex combination reproduces it exactly.
    np.testing.assert_array_equal(out, image)


def test_rounding_half_to_even():
    # Overlap length 3: the middle pixel (d = 2) has weights 1 - 2/4 = 0.5 from both tiles.
    plan = plan_tiles(13, 1, 8, 3)
    assert [t.x for t in plan] == [0, 5]
    for a, b, expected in [(100, 101, 100), (101, 102, 102), (0, 1, 0), (1, 2, 2)]:
        tiles = [(plan.tiles[0], np.full((1, 8), a, np.uint8)), (plan.tiles[1], np.full((1, 8), b, np.uint8))]
        assert merge_tiles(1, 13, tiles)[0, 6] == expected


def assert_float32_merge_agrees(got: np.ndarray, expected: np.ndarray) -> None:
    """The issue's criterion for float32 accumulation: identical to the float64 reference on
    >= 99.99 % of pixels and never more than one level off."""
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 1e-4 * diff.size


@pytest.mark.parametrize("seed", range(3))
def test_merger_in_any_order_equals_the_straightforward_merge(seed):
    rng = np.random.default_rng(seed)
    plan = plan_tiles(150, 110, 48, 12)
    outputs = [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in plan]
    expected = merge_tiles_reference(110, 150, zip(plan.tiles, outputs))
    order = rng.permutation(len(plan))
    merger = TileMerger(plan.tiles, 110, 150, threads=1 + seed)
    for i in order:
        merger.aggregate(int(i), outputs[i])
    assert_float32_merge_agrees(merger.finalize(), expected)
    assert merger.peak_buffered_bytes > 0


@pytest.mark.parametrize("w,h,t,o", [(100, 70, 40, 10), (7, 7, 3, 2), (33, 65, 32, 5), (250, 90, 64, 20)])
def test_grid_weights_are_separable(w, h, t, o):
    # The normalised weight of tile (r, c) of a full grid is outer(ny_r, nx_c): compare the
    # merger's per-axis vectors with the paper's three phases on full 2-D arrays.
    plan = plan_tiles(w, h, t, o)
    assert grid_axes(plan.tiles) is not None
    merger = TileMerger(plan.tiles, h, w)
    for tile, full in zip(plan.tiles, normalised_weight_tiles(plan.tiles, h, w)):
        ny, nx = merger._separable[plan.tiles.index(tile)]
        np.testing.assert_allclose(np.outer(ny, nx), full, rtol=2e-7, atol=1e-7)


def test_irregular_tiles_are_not_a_grid():
    assert grid_axes(irregular_tiles(3)) is None


@pytest.mark.parametrize("seed", range(2))
def test_float32_grid_merge_agrees_with_float64_at_scale(seed):
    # ~8 million pixels with 4-tile corners and uneven last overlaps, random tile outputs
    # (the worst case for rounding: every value of the float64 sum's fraction is hit).
    rng = np.random.default_rng(100 + seed)
    w, h = 3300, 2500
    plan = plan_tiles(w, h, 1024, 160)
    outputs = [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in plan]
    skipped = {int(rng.integers(len(plan)))}  # a background tile: zero, but keeps its weight
    pairs = [(t, None if i in skipped else g) for i, (t, g) in enumerate(zip(plan.tiles, outputs))]
    expected = merge_tiles_reference(h, w, [(t, np.zeros((t.height, t.width), np.uint8) if g is None else g)
                                            for t, g in pairs])
    order = [int(i) for i in rng.permutation(len(plan))]
    results = []
    for threads in (2, 1):
        merger = TileMerger(plan.tiles, h, w, threads=threads)
        for i in order:
            merger.aggregate(i, pairs[i][1])
        results.append(merger.finalize())
    assert_float32_merge_agrees(results[0], expected)
    # The thread count changes nothing (float32 sums can depend on the tile order, not on threads).
    np.testing.assert_array_equal(results[0], results[1])
    assert_float32_merge_agrees(merge_tiles(h, w, pairs), expected)
    # The per-cell float64 merger (used for irregular plans) is the reference, exactly.
    cells = CellMerger(plan.tiles, h, w)
    for i in order:
        cells.aggregate(i, pairs[i][1])
    np.testing.assert_array_equal(cells.finalize(), expected)


def test_irregular_plan_merge_matches_reference():
    tiles = irregular_tiles(7)
    rng = np.random.default_rng(7)
    outputs = [rng.integers(0, 256, (t.height, t.width), dtype=np.uint8) for t in tiles]
    np.testing.assert_array_equal(merge_tiles(60, 80, zip(tiles, outputs)),
                                  merge_tiles_reference(60, 80, zip(tiles, outputs)))


def test_tiles_not_run_contribute_zero_but_keep_their_weight():
    plan = plan_tiles(16, 10, 10, 4)
    ones = np.full((10, 10), 200, np.uint8)
    out = merge_tiles(10, 16, [(plan.tiles[0], ones), (plan.tiles[1], None)])
    assert (out[:, :6] == 200).all() and (out[:, 10:] == 0).all()
    # In the overlap the first tile's weight is 1 - d/5: 200 * (0.8, 0.6, 0.4, 0.2).
    np.testing.assert_array_equal(out[0, 6:10], [160, 120, 80, 40])


def test_merger_misuse_is_refused():
    plan = plan_tiles(16, 10, 10, 4)
    merger = TileMerger(plan.tiles, 10, 16)
    with pytest.raises(InvalidArgumentError):
        merger.aggregate(0, np.zeros((5, 5), np.uint8))
    merger.aggregate(0, np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidArgumentError):
        merger.aggregate(0, np.zeros((10, 10), np.uint8))
    with pytest.raises(TsegError):
        merger.finalize()  # tile 1 missing
    merger.aggregate(1, None)
    merger.finalize()
    with pytest.raises(TsegError):
        merger.aggregate(1, None)
    with pytest.raises(InvalidArgumentError):
        TileMerger([Tile(0, 0, 10, 0, 10, 10)], 10, 16)  # outside the image


def test_memmap_output(tmp_path):
    plan = plan_tiles(70, 50, 32, 8)
    out = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.uint8, shape=(50, 70))
    merger = TileMerger(plan.tiles, 50, 70, out=out)
    for i, t in enumerate(plan):
        merger.aggregate(i, np.full((t.height, t.width), 9, np.uint8))
    assert merger.finalize() is out and (np.load(tmp_path / "f.npy") == 9).all()


def test_each_strategy_is_its_own_class():
    # TileMerger is the full-grid merger; other tile sets go to CellMerger (merger_for picks).
    tiles = irregular_tiles(5)
    with pytest.raises(InvalidArgumentError, match="CellMerger"):
        TileMerger(tiles, 60, 80)
    assert type(merger_for(tiles, 60, 80)) is CellMerger
    plan = plan_tiles(150, 110, 48, 12)
    assert type(merger_for(plan.tiles, 110, 150)) is TileMerger
