"""The overlapped tile pipeline: stages, skipping, errors and bounded queues."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tseg.runtime.execution.backends.base import Backend
from tseg.runtime.execution.contract import ModelContract
from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.method.merge import CellMerger, merge_tiles_reference
from tseg.runtime.execution.pipeline import run_tiles
from tseg.runtime.method.tiling import plan_tiles


class EchoBackend(Backend):
    """Returns the red channel as probability; records the shapes it saw."""

    kind = "echo"

    def __init__(self, divisor=16, delay=0.0, fail_at=None):
        super().__init__(path=None, contract=ModelContract(tile_size=64, min_overlap=16, divisor=divisor))
        self.shapes, self.delay, self.fail_at, self.calls = [], delay, fail_at, 0
        self.active = 0
        self.max_in_flight = 0

    def _infer_impl(self, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("device lost")
        self.shapes.append(batch.shape)
        if self.delay:
            time.sleep(self.delay)
        return np.ascontiguousarray(batch[..., 0][:, None])

    def describe(self):
        return {"kind": self.kind}


def image(h=150, w=170, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pipeline_equals_direct_merge_and_pads_to_the_divisor():
    img = image()
    plan = plan_tiles(170, 150, 64, 16)
    backend = EchoBackend(divisor=32)
    prob, stats = run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], backend)
    expected = merge_tiles_reference(150, 170, [(t, img[t.y : t.y_end, t.x : t.x_end, 0]) for t in plan])
    np.testing.assert_array_equal(prob, expected)
    # 64 is a multiple of 32; tiles come in at that size.
    assert all(s[1] % 32 == 0 and s[2] % 32 == 0 for s in backend.shapes)
    assert stats.tiles_run == len(plan) == stats.tiles_total and stats.tiles_skipped == 0


def test_small_image_is_padded_and_cropped():
    img = image(50, 70)
    plan = plan_tiles(70, 50, 64, 16)  # 2 tiles of 64 x 50: padded to 64 x 64
    backend = EchoBackend(divisor=32)
    prob, _ = run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], backend)
    assert backend.shapes == [(1, 64, 64, 3)] * 2
    np.testing.assert_array_equal(prob[:, :6], img[:, :6, 0])


def test_skipped_tiles_are_not_run_and_count_as_zero():
    img = image()
    plan = plan_tiles(170, 150, 64, 16)
    run = [i % 2 == 0 for i in range(len(plan))]
    backend = EchoBackend()
    seen = []
    prob, stats = run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], backend, run,
                            on_tile=lambda i, r: seen.append((i, r)))
    assert backend.calls == sum(run) and stats.tiles_skipped == len(run) - sum(run)
    assert sorted(seen) == [(i, run[i]) for i in range(len(plan))]
    expected = merge_tiles_reference(150, 170, [(t, img[t.y : t.y_end, t.x : t.x_end, 0] if r else
                                                 np.zeros((t.height, t.width), np.uint8)) for t, r in zip(plan, run)])
    np.testing.assert_array_equal(prob, expected)


def test_stages_overlap_in_time():
    """Reading tile k+1 happens while tile k is inferred (checked on recorded intervals, not on
    a wall-clock threshold)."""
    img = image(400, 400)
    plan = plan_tiles(400, 400, 64, 16)  # 64 tiles
    reads, infers = [], []

    def slow_read(t):
        t0 = time.perf_counter()
        time.sleep(0.005)
        reads.append((t0, time.perf_counter()))
        return img[t.y : t.y_end, t.x : t.x_end]

    class Recording(EchoBackend):
        def _infer_impl(self, batch):
            t0 = time.perf_counter()
            out = super()._infer_impl(batch)
            infers.append((t0, time.perf_counter()))
            return out

    run_tiles(plan, slow_read, Recording(delay=0.005))
    overlapping = sum(1 for a0, a1 in infers if any(r0 < a1 and a0 < r1 for r0, r1 in reads))
    assert overlapping > len(infers) // 2


def test_reader_error_stops_everything():
    plan = plan_tiles(170, 150, 64, 16)

    def bad_read(t):
        if t.row == 1:
            raise TsegError("tile unreadable")
        return np.zeros((t.height, t.width, 3), np.uint8)

    with pytest.raises(TsegError, match="unreadable"):
        run_tiles(plan, bad_read, EchoBackend())
    assert not [t for t in threading.enumerate() if t.name.startswith("tseg-")]


def test_backend_error_propagates():
    img = image()
    plan = plan_tiles(170, 150, 64, 16)
    with pytest.raises(RuntimeError, match="device lost"):
        run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], EchoBackend(fail_at=3))


def test_memory_stays_bounded():
    img = image(600, 600)
    plan = plan_tiles(600, 600, 64, 16)
    in_flight = []
    lock = threading.Lock()
    state = {"read": 0, "inferred": 0}

    class Counting(EchoBackend):
        def _infer_impl(self, batch):
            time.sleep(0.005)
            with lock:
                state["inferred"] += 1
            return super()._infer_impl(batch)

    def read(t):
        with lock:
            state["read"] += 1
            in_flight.append(state["read"] - state["inferred"])
        return img[t.y : t.y_end, t.x : t.x_end]

    run_tiles(plan, read, Counting(), prefetch=2)
    # At most prefetch (queued) + 1 (being inferred) + 1 (being read) tiles ahead.
    assert max(in_flight) <= 4


def test_the_caller_chooses_the_merger(tmp_path):
    # A disk-backed merger (out= a memmap) receives the map; a merger for another plan is refused.
    img = image()
    plan = plan_tiles(170, 150, 64, 16)
    out = np.lib.format.open_memmap(tmp_path / "prob.npy", mode="w+", dtype=np.uint8, shape=(150, 170))
    prob, _ = run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], EchoBackend(),
                        merger=CellMerger(plan.tiles, 150, 170, out=out))
    expected = merge_tiles_reference(150, 170, [(t, img[t.y : t.y_end, t.x : t.x_end, 0]) for t in plan])
    assert prob is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "prob.npy"), expected)
    other = plan_tiles(100, 100, 64, 16)
    with pytest.raises(InvalidArgumentError, match="merger"):
        run_tiles(plan, lambda t: img[t.y : t.y_end, t.x : t.x_end], EchoBackend(),
                  merger=CellMerger(other.tiles, 100, 100))
