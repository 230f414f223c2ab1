"""Tile starts and plans, from the paper's *Tiling* section and Protocol Listing 1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.method.tiling import pad_to_divisor, padded_size, plan_tiles, tile_starts


def check_listing1(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    # Full coverage of [0, length) and nothing outside it.
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] = True
    assert covered.all()
    # Last tile flush with the far edge.
    assert starts[-1] + size == length
    if length <= tile:
        assert starts == [0]
        return
    # n = ceil((L - o) / (T - o)) tiles.
    assert len(starts) == math.ceil((length - overlap) / (tile - overlap))
    # Consecutive tiles overlap by exactly o, except the last pair, which overlaps at least o.
    overlaps = [a + tile - b for a, b in zip(starts[:-1], starts[1:])]
    assert all(o == overlap for o in overlaps[:-1])
    assert overlaps[-1] >= overlap
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("tile,overlap", [(7680, 1024), (2048, 0), (10, 3), (32, 31), (5, 0), (1, 0)])
@pytest.mark.parametrize("delta", [-5, -1, 0, 1, 2])
def test_listing1_around_tile_size(tile, overlap, delta):
    length = tile + delta
    if length >= 1:
        check_listing1(length, tile, overlap)


@pytest.mark.parametrize("length", [1, 9, 100, 1001, 7679, 7680, 7681, 14336, 20000, 25000, 100_000])
@pytest.mark.parametrize("tile,overlap", [(7680, 1024), (2048, 0), (100, 10), (7, 6)])
def test_listing1_many_lengths(length, tile, overlap):
    check_listing1(length, tile, overlap)


def test_paper_inference_settings_by_hand():
    # 20,000 px at 1 µm/px: n = ceil(18976 / 6656) = 3; the last tile starts at 20000 - 7680.
    assert tile_starts(20_000, 7680, 1024) == [0, 6656, 12_320]
    # One pixel longer than a tile: two tiles, the second flush with the edge.
    assert tile_starts(7681, 7680, 1024) == [0, 1]
    assert tile_starts(7680, 7680, 1024) == [0]
    assert tile_starts(5000, 7680, 1024) == [0]


def test_paper_training_settings_by_hand():
    assert tile_starts(4096, 2048, 0) == [0, 2048]
    assert tile_starts(5000, 2048, 0) == [0, 2048, 2952]


def test_plan_is_listing1_on_both_axes():
    plan = plan_tiles(20_000, 9000, 7680, 1024)
    assert len(plan) == 3 * 2 and plan.cols == 3 and plan.rows == 2
    assert sorted({t.x for t in plan}) == tile_starts(20_000, 7680, 1024)
    assert sorted({t.y for t in plan}) == tile_starts(9000, 7680, 1024)
    assert all((t.width, t.height) == (7680, 7680) for t in plan)
    # Row-major order.
    assert [(t.row, t.col) for t in plan] == [(r, c) for r in range(2) for c in range(3)]


def test_plan_smaller_than_one_tile_is_one_tile_of_the_slide_size():
    plan = plan_tiles(1107, 1480, 7680, 1024)
    assert len(plan) == 1
    assert plan.tiles[0].box == (0, 0, 1107, 1480)


@pytest.mark.parametrize("args", [(0, 10, 0), (10, 0, 0), (10, 10, 10), (10, 10, -1), (10.5, 10, 0)])
def test_invalid_arguments(args):
    with pytest.raises(InvalidArgumentError):
        tile_starts(*args)


def test_padding_to_divisor_and_back():
    img = np.arange(50 * 70 * 3, dtype=np.uint8).reshape(50, 70, 3)
    padded = pad_to_divisor(img, 32)
    assert padded.shape == (64, 96, 3)
    assert padded_size(50, 70, 32) == (64, 96)
    # Zero padding at the bottom and right, the image untouched at the top left.
    np.testing.assert_array_equal(padded[:50, :70], img)
    assert not padded[50:].any() and not padded[:, 70:].any()
    # Already divisible: returned as is.
    assert pad_to_divisor(padded, 32) is padded
    assert padded_size(7680, 7680, 16) == (7680, 7680)
