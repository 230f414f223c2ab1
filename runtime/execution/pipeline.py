"""Tile inference that overlaps reading, inference and merging (paper, *Method application*).

Three stages connected by bounded queues, so memory stays bounded (at most ``prefetch`` tiles
waiting on each side of the backend, plus the one being run):

* a reader thread reads tiles in plan order, each tile itself read block-wise by the slide's
  pool of reader threads (:meth:`tseg.runtime.wsi.slide.Slide.read`);
* the calling thread pads each tile to the model's divisor (zeros at the bottom and right,
  *Method application* step 2), streams the tiles through the backend (``infer_many``, which
  lets a TensorRT backend overlap copies with compute), and crops the padding off the output;
* a merge thread accumulates outputs into the merger it is given (by default
  :func:`~tseg.runtime.method.merge.merger_for` the plan: a :class:`~tseg.runtime.method.merge.TileMerger`).

Tiles whose box holds no foreground in the 5 µm/px background mask are not run: they are
counted and contribute zero probability (the merger still gives them their share of the
weights). An error in any stage stops the others and is re-raised in the caller.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from tseg.runtime.execution.backends.base import Backend
from tseg.runtime.util.signals import stops_deferred
from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.method.merge import CellMerger, merger_for
from tseg.runtime.method.tiling import Tile, TilePlan, pad_to_divisor

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class TileStats:
    """What the tile stage did and how long each stage was busy (seconds)."""

    tiles_total: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0
    read_s: float = 0.0
    infer_s: float = 0.0
    merge_s: float = 0.0
    wall_s: float = 0.0
    merge_buffer_peak_bytes: int = 0

    def as_dict(self) -> dict[str, float | int]:
        slowest = max(self.read_s, self.infer_s, self.merge_s)
        return {
            "tiles_total": self.tiles_total,
            "tiles_run": self.tiles_run,
            "tiles_skipped_background": self.tiles_skipped,
            "read_s": round(self.read_s, 4),
            "infer_s": round(self.infer_s, 4),
            "merge_s": round(self.merge_s, 4),
            "wall_s": round(self.wall_s, 4),
            "overlap_wall_over_slowest_stage": round(self.wall_s / slowest, 4) if slowest > 0 else None,
            "merge_buffer_peak_mb": round(self.merge_buffer_peak_bytes / 1e6, 3),
        }


class _Stages:
    """The three stages of :func:`run_tiles` and the state they share (queues, stop, errors)."""

    def __init__(self, tiles: list[Tile], run: list[bool], merger: CellMerger, stats: TileStats, prefetch: int,
                 on_tile: Callable[[int, bool], None] | None, stop: threading.Event) -> None:
        self.tiles, self.run, self.merger, self.stats, self.on_tile, self.stop = tiles, run, merger, stats, on_tile, stop
        self.to_infer: "queue.Queue[object]" = queue.Queue(maxsize=prefetch)
        self.to_merge: "queue.Queue[object]" = queue.Queue(maxsize=prefetch)
        self.errors: list[BaseException] = []
        self.blocked = 0.0  # time the inference loop spent waiting on its queues

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()

    def put(self, q: "queue.Queue[object]", item: object) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: "queue.Queue[object]") -> object:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _DONE

    def reader(self, read_tile: Callable[[Tile], np.ndarray]) -> None:
        try:
            for index, tile in enumerate(self.tiles):
                if not self.run[index]:
                    continue
                t0 = time.perf_counter()
                rgb = read_tile(tile)
                self.stats.read_s += time.perf_counter() - t0
                if rgb.shape != (tile.height, tile.width, 3) or rgb.dtype != np.uint8:
                    raise TsegError(f"tile {index} was read as {rgb.dtype} {rgb.shape}, expected "
                                    f"uint8 {(tile.height, tile.width, 3)}")
                if not self.put(self.to_infer, (index, rgb)):
                    return
            self.put(self.to_infer, _DONE)
        except BaseException as exc:  # propagated to the caller
            self.fail(exc)

    def merging(self) -> None:
        try:
            for index in range(len(self.tiles)):
                if not self.run[index]:
                    self.merger.aggregate(index, None)
                    if self.on_tile:
                        self.on_tile(index, False)
            while True:
                item = self.get(self.to_merge)
                if item is _DONE:
                    return
                index, out = item  # type: ignore[misc]
                t0 = time.perf_counter()
                self.merger.aggregate(index, out)
                self.stats.merge_s += time.perf_counter() - t0
                if self.on_tile:
                    self.on_tile(index, True)
        except BaseException as exc:
            self.fail(exc)

    def batches(self, divisor: int) -> Iterator[tuple[int, np.ndarray]]:
        """The read tiles, padded to the model's divisor (*Method application* step 2)."""
        while True:
            t_wait = time.perf_counter()
            item = self.get(self.to_infer)
            self.blocked += time.perf_counter() - t_wait
            if item is _DONE:
                return
            index, rgb = item  # type: ignore[misc]
            yield index, pad_to_divisor(rgb, divisor)[None]

    def infer(self, backend: Backend) -> None:
        """Stream the tiles through ``backend`` and hand each output, cropped, to the merger."""
        try:
            t_loop = time.perf_counter()
            for index, out in backend.infer_many(self.batches(backend.contract.divisor)):
                tile = self.tiles[index]
                t_wait = time.perf_counter()
                ok = self.put(self.to_merge, (index, np.ascontiguousarray(out[0, 0, : tile.height, : tile.width])))
                self.blocked += time.perf_counter() - t_wait
                if not ok:
                    break
            self.stats.infer_s = time.perf_counter() - t_loop - self.blocked
            self.put(self.to_merge, _DONE)
        except BaseException as exc:
            self.fail(exc)


def run_tiles(
    plan: TilePlan,
    read_tile: Callable[[Tile], np.ndarray],
    backend: Backend,
    run: Sequence[bool] | None = None,
    prefetch: int = 2,
    on_tile: Callable[[int, bool], None] | None = None,
    cancel: threading.Event | None = None,
    merger: CellMerger | None = None,
) -> tuple[np.ndarray, TileStats]:
    """Run ``backend`` on the tiles of ``plan`` and merge them into the uint8 probability map.

    ``read_tile(tile)`` returns the tile's RGB uint8 pixels; ``run[i]`` False skips tile ``i``
    (background); ``on_tile(index, was_run)`` is called after each tile is merged (progress).
    ``merger`` (``aggregate``, ``finalize``, ``peak_buffered_bytes``; default
    :func:`~tseg.runtime.method.merge.merger_for` the plan) receives the outputs: pass one built
    with ``out=`` a ``numpy.memmap`` to keep the map on disk.
    """
    if prefetch < 1:
        raise InvalidArgumentError(f"prefetch must be >= 1, got {prefetch}")
    tiles = list(plan.tiles)
    run = [True] * len(tiles) if run is None else list(run)
    if len(run) != len(tiles):
        raise InvalidArgumentError(f"run has {len(run)} entries for {len(tiles)} tiles")
    if merger is None:
        merger = merger_for(tiles, plan.height, plan.width)
    elif len(merger.tiles) != len(tiles):
        raise InvalidArgumentError(f"the merger has {len(merger.tiles)} tiles, the plan {len(tiles)}")
    stats = TileStats(tiles_total=len(tiles), tiles_run=sum(run), tiles_skipped=len(run) - sum(run))
    stages = _Stages(tiles, run, merger, stats, prefetch, on_tile, cancel or threading.Event())
    started = time.perf_counter()
    threads = [threading.Thread(target=stages.reader, args=(read_tile,), name="tseg-reader", daemon=True),
               threading.Thread(target=stages.merging, name="tseg-merger", daemon=True)]
    with stops_deferred():  # Ctrl-C or SIGTERM inside Thread.start would break its lock
        for t in threads:
            t.start()
    stages.infer(backend)
    for t in threads:
        t.join()
    if stages.errors:
        raise stages.errors[0]
    if cancel is not None and cancel.is_set():
        raise TsegError("tile inference was cancelled")
    stats.wall_s = time.perf_counter() - started
    stats.merge_buffer_peak_bytes = merger.peak_buffered_bytes
    return merger.finalize(), stats
