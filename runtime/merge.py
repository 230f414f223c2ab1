"""Reconstruction of the probability map from overlapping tiles (paper, *Reconstruction from tiles*).

``f = sum_i w_i * g_i`` where ``g_i`` is tile ``i``'s uint8 output and ``w_i`` its weight tile.
An initial weight tile is the product of four side weights. For the right side: among the tiles
that overlap tile ``i`` and start to its right, the smallest left coordinate ``s`` starts the
right overlap ``[s, x_end)`` of length ``l``; pixels before ``s`` get 1, pixels inside get
``v = 1 - d / (l + 1)``. Top, bottom and left likewise (left: the largest right edge ``e`` among
overlapping tiles that end before this one; overlap ``[x, e)``). The initial weights are then
divided by their sum over all tiles at each pixel, so the weights add to exactly 1, and ``f`` is
rounded half to even to uint8.

**Our reading of d.** The paper measures ``d`` "from the overlapping border" and divides by
``l + 1``; we count ``d = 1`` at the first pixel inside the overlap and ``d = l`` at the last,
i.e. the ramp is ``linspace(1, 0, l + 2)[1:-1]``: it never reaches 1 or 0 inside the overlap and,
for two tiles overlapping by ``l``, the two ramps already add to exactly 1 before normalisation.

**Cost.** :class:`TileMerger` splits the image into cells bounded by every tile edge. A cell
covered by one tile is copied from it (its normalised weight is exactly 1); a cell covered by
several tiles accumulates ``w_i * g_i`` in a float64 buffer that is rounded into the uint8
result and freed as soon as the last covering tile has arrived. Tiles may arrive in any order.
For a 100k x 80k slide at 0.25 µm/px (25,000 x 20,000 px at 1 µm/px; 4 x 4 tiles of 7680 px with
1024+ px overlaps) the result is 500 MB of uint8, and the float64 buffers hold at most the
overlap cells of the tiles in flight: with tiles in row order about one horizontal overlap band,
1,024 x 25,000 x 8 B = 205 MB (plus the vertical overlaps of the current row, ~0.1 GB); in the
worst order every overlap cell at once, ~0.9 GB. The naive method (two float arrays of the full
size, as :func:`merge_tiles_reference`) would need 2 x 4 GB in float64. Pass ``out=`` a
``numpy.memmap`` to keep the uint8 result on disk for even larger slides.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import InvalidArgumentError, TsegError
from .tiling import Tile


def _ramp(length: int) -> np.ndarray:
    """``v = 1 - d / (l + 1)`` for ``d = 1 .. l``."""
    d = np.arange(1, length + 1, dtype=np.float64)
    return 1.0 - d / (length + 1)


def _axis_weights(lo: int, hi: int, others: list[tuple[int, int]]) -> np.ndarray:
    """One axis of a tile spanning ``[lo, hi)``: the two side weights for the overlapping
    ``others`` (their spans on this axis) multiplied together."""
    w = np.ones(hi - lo, dtype=np.float64)
    after = [start for start, _ in others if start > lo]  # tiles starting after this one
    if after:
        s = min(after)
        w[s - lo :] *= _ramp(hi - s)
    before = [end for _, end in others if end < hi]  # tiles ending before this one
    if before:
        e = max(before)
        w[: e - lo] *= _ramp(e - lo)[::-1]
    return w


def side_weights(tiles: Sequence[Tile], index: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D initial weights ``(wy, wx)`` of tile ``index``: top x bottom and left x right.

    The 2-D initial weight tile is ``np.outer(wy, wx)`` (each side weight depends on one axis).
    """
    t = tiles[index]
    others = [o for j, o in enumerate(tiles) if j != index and o.overlaps(t)]
    wx = _axis_weights(t.x, t.x_end, [(o.x, o.x_end) for o in others])
    wy = _axis_weights(t.y, t.y_end, [(o.y, o.y_end) for o in others])
    return wy, wx


def _validate(tiles: Sequence[Tile], height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise InvalidArgumentError(f"height and width must be positive, got {height} x {width}")
    if not tiles:
        raise InvalidArgumentError("no tiles to merge")
    for t in tiles:
        if t.x < 0 or t.y < 0 or t.x_end > width or t.y_end > height or t.width < 1 or t.height < 1:
            raise InvalidArgumentError(f"tile {t} does not lie inside the {width} x {height} image")


def normalised_weight_tiles(tiles: Sequence[Tile], height: int, width: int) -> list[np.ndarray]:
    """The paper's three phases literally: initial weights, sum image, per-tile normalisation.

    Returns one 2-D float64 weight tile per tile. Used by tests and as the benchmark baseline.
    """
    _validate(tiles, height, width)
    initial = [np.outer(*side_weights(tiles, i)) for i in range(len(tiles))]
    total = np.zeros((height, width), dtype=np.float64)
    for t, w in zip(tiles, initial):
        total[t.y : t.y_end, t.x : t.x_end] += w
    return [w / total[t.y : t.y_end, t.x : t.x_end] for t, w in zip(tiles, initial)]


def round_half_even_u8(values: np.ndarray) -> np.ndarray:
    """Round half to even (``np.rint``) and clip to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def merge_tiles_reference(height: int, width: int,
                          tiles: Iterable[tuple[Tile, np.ndarray]]) -> np.ndarray:
    """Straightforward full-array merge (the naive baseline; needs all tiles of the plan)."""
    pairs = list(tiles)
    plan = [t for t, _ in pairs]
    weights = normalised_weight_tiles(plan, height, width)
    f = np.zeros((height, width), dtype=np.float64)
    for (t, g), w in zip(pairs, weights):
        f[t.y : t.y_end, t.x : t.x_end] += w * np.asarray(g, dtype=np.float64)
    return round_half_even_u8(f)


@dataclass
class _Cell:
    x0: int
    y0: int
    x1: int
    y1: int
    covering: list[int]
    remaining: int
    buffer: np.ndarray | None = None


class MergerFinalizedError(TsegError):
    """``aggregate`` after ``finalize``."""


class TileMerger:
    """Accumulates tile outputs one at a time, in any order, into the merged uint8 map.

    ``aggregate(tile_index, values)`` adds one tile's uint8 output (its shape is the tile's);
    ``aggregate(tile_index, None)`` records a tile that was not run (background), which
    contributes zero probability but still takes its share of the weights. ``finalize()``
    returns the result once every tile has been aggregated. Thread-safe.
    """

    def __init__(self, tiles: Sequence[Tile], height: int, width: int,
                 out: np.ndarray | None = None) -> None:
        tiles = list(tiles)
        _validate(tiles, height, width)
        self.tiles = tiles
        self.height, self.width = int(height), int(width)
        if out is None:
            out = np.zeros((self.height, self.width), dtype=np.uint8)
        elif out.shape != (self.height, self.width) or out.dtype != np.uint8:
            raise InvalidArgumentError(
                f"out must be uint8 of shape {(self.height, self.width)}, got {out.dtype} {out.shape}"
            )
        else:
            out[...] = 0
        self._out = out
        self._weights = [side_weights(tiles, i) for i in range(len(tiles))]
        xs = sorted({0, self.width, *[t.x for t in tiles], *[t.x_end for t in tiles]})
        ys = sorted({0, self.height, *[t.y for t in tiles], *[t.y_end for t in tiles]})
        self._cells_of: list[list[_Cell]] = [[] for _ in tiles]
        for y0, y1 in zip(ys[:-1], ys[1:]):
            for x0, x1 in zip(xs[:-1], xs[1:]):
                covering = [i for i, t in enumerate(tiles)
                            if t.x <= x0 and x1 <= t.x_end and t.y <= y0 and y1 <= t.y_end]
                if covering:
                    cell = _Cell(x0, y0, x1, y1, covering, len(covering))
                    for i in covering:
                        self._cells_of[i].append(cell)
        self._done = [False] * len(tiles)
        self._finalized = False
        self._lock = threading.Lock()
        self._buffered_bytes = 0
        self.peak_buffered_bytes = 0

    @property
    def pending(self) -> int:
        """Tiles not yet aggregated."""
        return self._done.count(False)

    def _cell_weight(self, cell: _Cell, index: int) -> np.ndarray:
        """Normalised weight of tile ``index`` on ``cell``."""
        def initial(i: int) -> np.ndarray:
            t = self.tiles[i]
            wy, wx = self._weights[i]
            return np.outer(wy[cell.y0 - t.y : cell.y1 - t.y], wx[cell.x0 - t.x : cell.x1 - t.x])

        total = sum(initial(i) for i in cell.covering)
        return initial(index) / total

    def aggregate(self, index: int, values: np.ndarray | None) -> None:
        if not 0 <= index < len(self.tiles):
            raise InvalidArgumentError(f"tile index {index} is not in the plan of {len(self.tiles)} tiles")
        t = self.tiles[index]
        if values is not None:
            values = np.asarray(values)
            if values.shape != (t.height, t.width):
                raise InvalidArgumentError(
                    f"tile {index} output has shape {values.shape}, expected {(t.height, t.width)}"
                )
        with self._lock:
            if self._finalized:
                raise MergerFinalizedError("aggregate() after finalize()")
            if self._done[index]:
                raise InvalidArgumentError(f"tile {index} was aggregated twice")
            self._done[index] = True
            for cell in self._cells_of[index]:
                region = (slice(cell.y0, cell.y1), slice(cell.x0, cell.x1))
                local = (slice(cell.y0 - t.y, cell.y1 - t.y), slice(cell.x0 - t.x, cell.x1 - t.x))
                if len(cell.covering) == 1:
                    if values is not None:
                        self._out[region] = values[local]
                    cell.remaining = 0
                    continue
                if values is not None:
                    contribution = self._cell_weight(cell, index) * values[local]
                    if cell.buffer is None:
                        cell.buffer = contribution
                        self._buffered_bytes += contribution.nbytes
                        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self._buffered_bytes)
                    else:
                        cell.buffer += contribution
                cell.remaining -= 1
                if cell.remaining == 0:
                    if cell.buffer is not None:
                        self._out[region] = round_half_even_u8(cell.buffer)
                        self._buffered_bytes -= cell.buffer.nbytes
                        cell.buffer = None

    def finalize(self) -> np.ndarray:
        with self._lock:
            missing = [i for i, done in enumerate(self._done) if not done]
            if missing:
                raise TsegError(f"cannot finalize: {len(missing)} tiles never aggregated (first: {missing[:5]})")
            self._finalized = True
            return self._out


def merge_tiles(height: int, width: int,
                tiles: Iterable[tuple[Tile, np.ndarray | None]]) -> np.ndarray:
    """Merge a complete set of ``(tile, uint8 output)`` pairs (``None`` = a tile not run)."""
    pairs = list(tiles)
    merger = TileMerger([t for t, _ in pairs], height, width)
    for i, (_, values) in enumerate(pairs):
        merger.aggregate(i, values)
    return merger.finalize()
