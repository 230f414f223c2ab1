"""The double-buffered executor's scheduling, on a simulated device (CPU), and on CUDA if present.

The simulated device keeps a virtual clock: every operation enqueued on a stream starts when
the stream, its awaited events and the host are ready, and lasts a fixed time; events carry
completion times; host synchronisation advances the host clock. Data moves at enqueue time.
From the recorded intervals we check the overlap the design promises and the absence of
hazards (no operation touches a buffer while another stream's operation on it is in flight).
"""

from __future__ import annotations

import numpy as np
import pytest

from tseg.runtime.bench.executor_check import TimedAPI, check_executor, overlap_failures
from tseg.runtime.execution.executor import DoubleBufferedExecutor

from helpers import COMPUTE, D2H, H2D, STAGE, SimDevice


def run(n, shapes=None):
    dev = SimDevice()

    def compute(slot, dev_in, dev_out, shape, stream):
        h, w, _ = shape[1:]
        x = dev.memory[dev_in][: h * w * 3].reshape(h, w, 3)
        dev.memory[dev_out][: h * w] = (255 - x[..., 0]).ravel()
        dev._op("compute", stream, COMPUTE, {dev_in}, {dev_out})

    ex = DoubleBufferedExecutor(dev, 3 * 8 * 8, 8 * 8, compute, lambda s: (s[0], 1, s[1], s[2]))
    rng = np.random.default_rng(0)
    shapes = shapes or [(1, 8, 8, 3)] * n
    tiles = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    staged = []
    original = ex._enqueue

    def enqueue(slot, index, array):
        dev.host += STAGE  # the host memcpy into pinned memory takes time too
        staged.append(dev.host)
        return original(slot, index, array)

    ex._enqueue = enqueue
    outputs = list(ex.run(enumerate(tiles)))
    ex.close()
    return dev, tiles, outputs


def test_results_are_correct_and_in_order():
    _, tiles, outputs = run(7, [(1, 8, 8, 3), (1, 4, 8, 3), (1, 8, 4, 3)] * 2 + [(1, 2, 2, 3)])
    assert [k for k, _ in outputs] == list(range(7))
    for (k, out), tile in zip(outputs, tiles):
        assert out.shape == (1, 1) + tile.shape[1:3]
        np.testing.assert_array_equal(out[0, 0], 255 - tile[0, ..., 0])


def test_copies_overlap_compute():
    dev, _, _ = run(10)
    ops = {kind: [(s, e) for k, t, s, e, r, w in dev.ops if k == kind] for kind in ("h2d", "compute", "d2h")}
    # Tile k+1 goes to the device, and tile k-1 comes back, while tile k computes.
    for k in range(1, 9):
        c_start, c_end = ops["compute"][k]
        assert ops["h2d"][k + 1][0] < c_end, k
        assert ops["d2h"][k - 1][1] > c_start, k
    # Compute runs back to back: the total is about n x compute, not n x (h2d + compute + d2h).
    total = max(e for _, _, _, e, _, _ in dev.ops)
    assert total <= 10 * COMPUTE + H2D + D2H + 2 * STAGE
    assert total < 0.8 * 10 * (H2D + COMPUTE + D2H)


def test_no_hazards_between_streams():
    dev, _, _ = run(12)
    for i, (k1, _, s1, e1, r1, w1) in enumerate(dev.ops):
        for k2, _, s2, e2, r2, w2 in dev.ops[i + 1:]:
            overlap = s1 < e2 and s2 < e1
            if overlap:
                # Two operations in flight at once never write what the other reads or writes.
                assert not (w1 & (r2 | w2)) and not (w2 & (r1 | w1)), (k1, k2)


def assert_copies_overlap_compute(spans, n):
    """Tile k+1 goes to the device, and tile k-1 comes back, while tile k computes."""
    failures = overlap_failures(spans, n)
    assert not failures, failures


def test_timed_api_sees_the_overlap_on_the_simulated_device():
    """The same overlap check the GPU test applies to CUDA event times, on the virtual clock."""
    dev = SimDevice()
    api = TimedAPI(dev, dev.create_event, lambda a, b: b.time - a.time)

    def compute(slot, dev_in, dev_out, shape, stream):
        api.timed("compute", stream, lambda: dev._op("compute", stream, COMPUTE, {dev_in}, {dev_out}))

    ex = DoubleBufferedExecutor(api, 3 * 8 * 8, 8 * 8, compute, lambda s: (s[0], 1, s[1], s[2]))
    list(ex.run(enumerate(tiles(6))))
    ex.close()
    assert_copies_overlap_compute(api.spans(), 6)


def test_the_installed_executor_check_passes_on_the_simulated_device():
    """``tseg-rt bench --check``'s executor step (overlap from event times, bit-identity, the
    pipelining gain) on the simulated device's clock, with its compute as the stand-in."""
    dev = TimingSimDevice()

    def compute(slot, dev_in, dev_out, shape, stream):
        h, w, _ = shape[1:]
        x = dev.memory[dev_in][: h * w * 3].reshape(h, w, 3)
        dev.memory[dev_out][: h * w] = (255 - x[..., 0]).ravel()
        dev._op("compute", stream, COMPUTE, {dev_in}, {dev_out})

    result = check_executor(side=16, tiles=6, api=dev, compute=compute)
    assert result["ok"] and result["overlap_ok"] and result["overlap_failures"] == []
    assert result["identical_to_tile_alone"] and result["identical_to_numpy"]
    assert result["compute_ms_per_tile"] == COMPUTE and len(result["spans_ms"]["compute"]) == 6


def test_the_executor_check_reports_a_missing_overlap():
    spans = {"compute": [(0, 4), (4, 8), (8, 12)], "h2d": [(0, 1), (1, 2), (12, 13)], "d2h": [(4, 5), (8, 9), (12, 13)]}
    assert overlap_failures(spans, 3) == ["H2D of tile 2 did not overlap the compute of tile 1"]


class TimingSimDevice(SimDevice):
    """The simulated device with the timing-event calls of :class:`CudaDeviceAPI`."""

    def create_timing_event(self):
        return self.create_event()

    def elapsed_ms(self, start, end):
        return end.time - start.time


@pytest.mark.gpu
def test_cuda_executor_at_the_papers_tile_size():
    """On a CUDA machine, 7680 x 7680 tiles (177 MB in, 59 MB out) through real streams, pinned
    memory and copies, with a CuPy stand-in compute of about 150 ms a tile (an H100's time for the
    paper's network, docs/gpus.md): CUDA event times show the copies of neighbouring tiles running
    during each tile's compute, and the outputs are bit-identical to running each tile alone
    (synchronously) and to the same computation on the CPU. The same check as ``tseg-rt bench
    --check``'s executor step."""
    from tseg.runtime.execution.cuda import device_count

    if device_count() == 0:
        pytest.skip("no CUDA GPU here (cudaGetDeviceCount reports none)")
    pytest.importorskip("cupy", reason="the stand-in compute uses CuPy")
    result = check_executor(side=7680, tiles=6, compute_ms=150.0)
    assert not result["overlap_failures"], result["overlap_failures"]
    assert result["identical_to_tile_alone"] and result["identical_to_numpy"]


# --- threads, errors and shutdown (issue 11, defects 6-8) ---------------------------------------


def make_executor(dev, fail_on=None):
    def compute(slot, dev_in, dev_out, shape, stream):
        compute.count += 1
        if compute.count - 1 == fail_on:  # fails once, on the fail_on-th tile
            raise RuntimeError("a kernel launch failed")
        h, w, _ = shape[1:]
        x = dev.memory[dev_in][: h * w * 3].reshape(h, w, 3)
        dev.memory[dev_out][: h * w] = (255 - x[..., 0]).ravel()
        dev._op("compute", stream, COMPUTE, {dev_in}, {dev_out})

    compute.count = 0
    return DoubleBufferedExecutor(dev, 3 * 8 * 8, 8 * 8, compute, lambda s: (s[0], 1, s[1], s[2]))


def tiles(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8) for _ in range(n)]


def test_a_run_from_another_thread_makes_the_device_current_there():
    """CUDA's current device is per thread: the executor built on one thread must set it on the
    thread that runs it, or its launches go to another GPU."""
    import threading

    dev = SimDevice(strict_threads=True)
    dev.activate()  # the thread that builds the executor (as CudaDeviceAPI.__init__ does)
    ex = make_executor(dev)
    results, errors = [], []

    def worker():
        try:
            results.extend(ex.run(enumerate(tiles(3))))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors == [] and [k for k, _ in results] == [0, 1, 2]
    assert t.ident in dev.active_threads


def test_close_synchronises_every_stream_before_freeing():
    dev = SimDevice()
    ex = make_executor(dev, fail_on=2)
    with pytest.raises(RuntimeError, match="kernel launch failed"):
        list(ex.run(enumerate(tiles(4))))
    ex.close()
    assert dev.hazards == []
    assert dev.synchronized_streams >= 3 and dev.idle()


def test_an_error_mid_enqueue_leaves_nothing_in_flight_and_the_executor_usable():
    dev = SimDevice()
    ex = make_executor(dev, fail_on=2)  # tile 2's H2D is enqueued, then its compute fails
    with pytest.raises(RuntimeError):
        list(ex.run(enumerate(tiles(5))))
    assert dev.idle(), "the failed run returned with copies still in flight"
    fresh = tiles(4, seed=1)
    out = list(ex.run(enumerate(fresh)))
    for (k, o), t in zip(out, fresh):
        np.testing.assert_array_equal(o[0, 0], 255 - t[0, ..., 0])
    ex.close()
    assert dev.hazards == []


def test_an_abandoned_run_drains_before_its_buffers_are_reused():
    dev = SimDevice()
    ex = make_executor(dev)
    run = ex.run(enumerate(tiles(6)))
    first = next(run)  # the consumer takes one output and walks away; tile 1 is still in flight
    assert first[0] == 0 and not dev.idle()
    run.close()
    assert dev.idle(), "closing the generator left a tile in flight over the slot buffers"
    again = tiles(3, seed=2)
    for (k, o), t in zip(ex.run(enumerate(again)), again):
        np.testing.assert_array_equal(o[0, 0], 255 - t[0, ..., 0])
    ex.close()
    assert dev.hazards == []


def test_a_failed_allocation_releases_what_was_allocated():
    dev = SimDevice()
    original = dev.alloc_device
    calls = {"n": 0}

    def alloc_device(nbytes):
        calls["n"] += 1
        if calls["n"] == 3:  # the second slot's input buffer: out of device memory
            raise MemoryError("cudaMalloc: out of memory")
        return original(nbytes)

    dev.alloc_device = alloc_device
    with pytest.raises(MemoryError):
        make_executor(dev)
    assert dev.memory == {}, "device buffers leaked when the executor could not be built"


def test_cuda_errors_are_device_errors_not_backend_unavailable():
    """An asynchronous kernel fault is not 'backend unavailable' (issue 11, defect 8)."""
    from tseg.runtime.errors import BackendUnavailableError, DeviceError
    from tseg.runtime.execution.executor import CudaError

    assert issubclass(CudaError, DeviceError) and not issubclass(CudaError, BackendUnavailableError)
