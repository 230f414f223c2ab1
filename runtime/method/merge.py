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

**Cost.** :class:`TileMerger` (full grids) splits the image into cells bounded by every tile edge. A cell
covered by one tile is copied from it (its normalised weight is exactly 1). For a full grid of
tiles (every plan of Listing 1) the normalised weights are separable, ``outer(ny_r, nx_c)`` with
two precomputed 1-D vectors per tile. In a cell covered by several tiles the first tile to
arrive leaves its raw uint8 values in the result itself; the last one computes
``sum_i ny_i * (g_i * nx_i)`` in float32, band by band on a few threads in band-sized scratch,
and rounds it into place. Only cells covered by three or more tiles (the grid's corners) keep a
float32 buffer between their middle arrivals. Tiles may arrive in any order. For a
20,000 x 16,000 px map from 3 x 3 tiles of 7680 px (overlap 1024) the float buffers peak at
81 MB (518 MB with one float32 buffer per overlap cell, twice that in float64); the result
itself is 320 MB of uint8. The naive method (two float arrays of the full size, as
:func:`merge_tiles_reference`) would need 2 x 2.6 GB in float64. Pass ``out=`` a
``numpy.memmap`` to keep the uint8 result on disk for even larger slides. Irregular tile sets
(not a grid) use :class:`CellMerger`: per-cell float64 weights and buffers.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.util.parallel import run_jobs
from tseg.runtime.method.tiling import Tile


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
    stashed: int | None = None  # grid merger: tile whose raw uint8 values wait in the result


class MergerFinalizedError(TsegError):
    """``aggregate`` after ``finalize``."""


def grid_axes(tiles: Sequence[Tile]) -> tuple[list[int], list[int]] | None:
    """``(column of each tile, row of each tile)`` when the tiles form a full grid, else None.

    A full grid: the distinct x-spans times the distinct y-spans are exactly the tiles, each
    once (what :func:`~tseg.runtime.method.tiling.plan_tiles` makes).
    """
    xspans = sorted({(t.x, t.x_end) for t in tiles})
    yspans = sorted({(t.y, t.y_end) for t in tiles})
    if len(xspans) * len(yspans) != len(tiles):
        return None
    cols = [xspans.index((t.x, t.x_end)) for t in tiles]
    rows = [yspans.index((t.y, t.y_end)) for t in tiles]
    if len(set(zip(rows, cols))) != len(tiles):
        return None
    return cols, rows


def _normalised_axis(spans: list[tuple[int, int]], length: int) -> list[np.ndarray]:
    """Per-span normalised 1-D weights of one axis of a full grid.

    In a full grid a tile's side weights on one axis depend only on the spans of the other
    columns (rows) that overlap it, and the sum of the initial weights over the grid at
    ``(y, x)`` is ``sum_r wy_r(y) * sum_c wx_c(x)`` (the sum of products over a product set is
    the product of the sums). So the paper's normalised weight of tile ``(r, c)`` is exactly
    ``outer(wy_r / Sy, wx_c / Sx)`` with ``Sy, Sx`` the per-axis sums.
    """
    initial = [_axis_weights(lo, hi, [o for o in spans if o != (lo, hi) and o[0] < hi and lo < o[1]])
               for lo, hi in spans]
    total = np.zeros(length, dtype=np.float64)
    for (lo, hi), w in zip(spans, initial):
        total[lo:hi] += w
    return [w / total[lo:hi] for (lo, hi), w in zip(spans, initial)]


def default_merge_threads() -> int:
    """Threads used to merge one tile when none are requested: the CPU count, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


#: Rows per band of a parallel merge job: large enough to amortise a job, small enough that
#: every core gets several bands of a 7680 px tile.
_BAND_ROWS = 256


class CellMerger:
    """Accumulates tile outputs one at a time, in any order, into the merged uint8 map, for any
    set of tiles (the paper's *Reconstruction from tiles*).

    ``aggregate(tile_index, values)`` adds one tile's uint8 output (its shape is the tile's);
    ``aggregate(tile_index, None)`` records a tile that was not run (background), which
    contributes zero probability but still takes its share of the weights. ``finalize()``
    returns the result once every tile has been aggregated. Thread-safe.

    The image is split into cells bounded by every tile edge; an overlap cell keeps a float64
    buffer of its weighted sum, with each tile's normalised weight computed from the paper's
    definition. Used for irregular tile sets; :class:`TileMerger` is the fast one for full grids
    (and this one is the benchmarks' "before" for it).
    """

    def __init__(self, tiles: Sequence[Tile], height: int, width: int,
                 out: np.ndarray | None = None, threads: int | None = None) -> None:
        tiles = list(tiles)
        _validate(tiles, height, width)
        if threads is not None and threads < 1:
            raise InvalidArgumentError(f"threads must be >= 1, got {threads!r}")
        self.tiles = tiles
        self.height, self.width = int(height), int(width)
        self.threads = threads or default_merge_threads()
        if out is not None and (out.shape != (self.height, self.width) or out.dtype != np.uint8):
            raise InvalidArgumentError(
                f"out must be uint8 of shape {(self.height, self.width)}, got {out.dtype} {out.shape}"
            )
        self._prepare_weights()
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
        covered = sum((c.x1 - c.x0) * (c.y1 - c.y0) for c in {id(c): c for cs in self._cells_of for c in cs}.values())
        # A merger that writes every pixel itself needs no zero-filling pass (and no page faults
        # of calloc'ed memory: np.empty of a large array gets transparent huge pages).
        writes_every_pixel = self._writes_every_covered_pixel and covered == self.height * self.width
        if out is None:
            out = (np.empty if writes_every_pixel else np.zeros)((self.height, self.width), dtype=np.uint8)
        elif not writes_every_pixel:
            out[...] = 0
        self._out = out
        self._done = [False] * len(tiles)
        self._finalized = False
        self._lock = threading.Lock()
        self._buffered_bytes = 0
        self.peak_buffered_bytes = 0

    #: :meth:`_aggregate` writes every pixel of every cell, background tiles included.
    _writes_every_covered_pixel = False

    def _prepare_weights(self) -> None:
        self._weights = [side_weights(self.tiles, i) for i in range(len(self.tiles))]

    @property
    def pending(self) -> int:
        """Tiles not yet aggregated."""
        return self._done.count(False)

    def _cell_weight(self, cell: _Cell, index: int) -> np.ndarray:
        """Normalised float64 weight of tile ``index`` on ``cell`` (irregular plans)."""
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
            if values.dtype != np.uint8:
                values = np.clip(values, 0, 255).astype(np.uint8)
        with self._lock:
            if self._finalized:
                raise MergerFinalizedError("aggregate() after finalize()")
            if self._done[index]:
                raise InvalidArgumentError(f"tile {index} was aggregated twice")
            self._done[index] = True
            self._aggregate(index, values)

    def _count(self, nbytes: int) -> None:
        self._buffered_bytes += nbytes
        self.peak_buffered_bytes = max(self.peak_buffered_bytes, self._buffered_bytes)

    def _aggregate(self, index: int, values: np.ndarray | None) -> None:
        t = self.tiles[index]
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
                    self._count(contribution.nbytes)
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


class TileMerger(CellMerger):
    """The merger for a full grid of tiles (every plan of
    :func:`~tseg.runtime.method.tiling.plan_tiles`); :func:`merger_for` picks it.

    The normalised weights are outer products of precomputed per-axis vectors (see
    :func:`_normalised_axis`); the overlap cells sum ``ny * (g * nx)`` in float32, band by band
    on ``threads`` threads, and are rounded half to even into the result when their last tile
    arrives (see :meth:`_aggregate`). *Decision*: float32 changes the uint8 result only where the
    float64 sum lies within ~1e-4 of a half level (a few pixels per million, each one level;
    tests/runtime/method/test_merge.py measures it). A tile set that is not a full grid is refused
    (use :class:`CellMerger`).
    """

    _writes_every_covered_pixel = True

    def _prepare_weights(self) -> None:
        grid = grid_axes(self.tiles)
        if grid is None:
            raise InvalidArgumentError("TileMerger takes a full grid of tiles (as plan_tiles makes); "
                                       "use CellMerger (or merger_for) for other tile sets")
        cols, rows = grid
        xspans = sorted({(t.x, t.x_end) for t in self.tiles})
        yspans = sorted({(t.y, t.y_end) for t in self.tiles})
        nx = [v.astype(np.float32) for v in _normalised_axis(xspans, self.width)]
        ny = [v.astype(np.float32) for v in _normalised_axis(yspans, self.height)]
        self._separable = [(ny[r], nx[c]) for r, c in zip(rows, cols)]
    def _aggregate(self, index: int, values: np.ndarray | None) -> None:
        """One tile into every cell it covers.

        A cell covered by one tile is a copy. In a cell covered by several, the first tile to
        arrive leaves its raw uint8 values in the result itself (no float buffer: most overlap
        cells have two tiles); the last computes ``sum_i ny_i * (g_i * nx_i)`` in a band-sized
        scratch and rounds it into the result. Only cells with three or more tiles (grid corners)
        keep a float32 buffer between their middle arrivals.
        """
        jobs: list[tuple[_Cell, int, int, str, int | None]] = []
        for cell in self._cells_of[index]:
            cell.remaining -= 1
            last = cell.remaining == 0
            if len(cell.covering) == 1:
                kind = "copy"
            elif cell.stashed is None and cell.buffer is None:
                kind, cell.stashed = "copy", index
            elif last:
                kind = "finish"
            elif cell.buffer is None:
                kind = "start"
                cell.buffer = np.empty((cell.y1 - cell.y0, cell.x1 - cell.x0), np.float32)
                self._count(cell.buffer.nbytes)
            else:
                kind = "add"
            first = cell.stashed
            if kind == "start":
                cell.stashed = None  # its values move into the buffer now
            if kind == "add" and values is None:
                continue
            for b0 in range(cell.y0, cell.y1, _BAND_ROWS):
                jobs.append((cell, b0, min(cell.y1, b0 + _BAND_ROWS), kind, first))
        if not jobs:
            return
        t = self.tiles[index]
        ny, nx = self._separable[index]
        scratch: "queue.SimpleQueue[np.ndarray]" = queue.SimpleQueue()
        widest = max(c.x1 - c.x0 for c, *_ in jobs)
        n = min(self.threads, len(jobs))
        for _ in range(n):
            scratch.put(np.empty((2, _BAND_ROWS, widest), np.float32))

        def weighted(i: int, g: np.ndarray, cell: _Cell, b0: int, b1: int, out: np.ndarray) -> None:
            """``out = ny_i * (g * nx_i)`` on the band ``[b0, b1)`` of ``cell``."""
            ti = self.tiles[i]
            wy, wx = self._separable[i]
            np.multiply(g, wx[cell.x0 - ti.x : cell.x1 - ti.x], out=out)
            np.multiply(out, wy[b0 - ti.y : b1 - ti.y, None], out=out)

        def run(job: tuple[_Cell, int, int, str, int | None]) -> None:
            cell, b0, b1, kind, first = job
            out_band = self._out[b0:b1, cell.x0 : cell.x1]
            g = None if values is None else values[b0 - t.y : b1 - t.y, cell.x0 - t.x : cell.x1 - t.x]
            if kind == "copy":
                if g is None:
                    out_band.fill(0)
                else:
                    out_band[...] = g
                return
            buf = None if cell.buffer is None else cell.buffer[b0 - cell.y0 : b1 - cell.y0]
            if kind == "add":
                pair = scratch.get()
                try:
                    tmp = pair[0, : b1 - b0, : cell.x1 - cell.x0]
                    weighted(index, g, cell, b0, b1, tmp)
                    np.add(buf, tmp, out=buf)
                finally:
                    scratch.put(pair)
                return
            pair = scratch.get()
            try:
                acc = buf if kind == "start" else pair[0, : b1 - b0, : cell.x1 - cell.x0]
                if kind == "start" or buf is None:  # the stashed tile's share, from the result
                    weighted(first, out_band, cell, b0, b1, acc)  # type: ignore[arg-type]
                else:
                    np.copyto(acc, buf)
                if g is not None:
                    tmp = pair[1, : b1 - b0, : cell.x1 - cell.x0]
                    weighted(index, g, cell, b0, b1, tmp)
                    np.add(acc, tmp, out=acc)
                if kind == "finish":
                    np.rint(acc, out=acc)
                    np.copyto(out_band, acc, casting="unsafe")
            finally:
                scratch.put(pair)

        run_jobs(run, jobs, n, "tseg-merge")
        for cell in self._cells_of[index]:
            if cell.remaining == 0 and cell.buffer is not None:
                self._buffered_bytes -= cell.buffer.nbytes
                cell.buffer = None


def merger_for(tiles: Sequence[Tile], height: int, width: int, out: np.ndarray | None = None,
               threads: int | None = None) -> CellMerger:
    """The merger for ``tiles``: :class:`TileMerger` for a full grid, else :class:`CellMerger`."""
    cls = TileMerger if grid_axes(list(tiles)) is not None else CellMerger
    return cls(tiles, height, width, out=out, threads=threads)


def merge_tiles(height: int, width: int,
                tiles: Iterable[tuple[Tile, np.ndarray | None]], threads: int | None = None) -> np.ndarray:
    """Merge a complete set of ``(tile, uint8 output)`` pairs (``None`` = a tile not run)."""
    pairs = list(tiles)
    merger = merger_for([t for t, _ in pairs], height, width, threads=threads)
    for i, (_, values) in enumerate(pairs):
        merger.aggregate(i, values)
    return merger.finalize()
