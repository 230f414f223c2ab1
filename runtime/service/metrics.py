"""Prometheus metrics of the service, in the text exposition format (version 0.0.4).

Names are stable (dashboards and alerts depend on them); all carry the ``tseg_`` prefix except
the standard ``process_resident_memory_bytes``:

=====================================  =========  ==================================================
``tseg_build_info{version}``           gauge      1, with the tseg-rt version as a label
``tseg_ready``                         gauge      1 when every device's engine is loaded and warmed up
``tseg_jobs{state}``                   gauge      jobs in the store by state (pending, running, ...)
``tseg_jobs_submitted_total{result}``  counter    submissions: created, active (an equal job was
                                                  queued), replayed (an idempotency key's job)
``tseg_jobs_finished_total{state}``    counter    jobs ended: success, failure, cancelled
``tseg_job_queue_seconds``             histogram  submission to start
``tseg_job_run_seconds``               histogram  start to end of a job
``tseg_time_to_first_tile_seconds``    histogram  start of a job to its first tile merged
``tseg_tiles_total{worker}``           counter    tiles run through the network
``tseg_tile_rate{worker}``             gauge      tiles per second over the last minute
``tseg_long_polls_waiting``            gauge      requests waiting now for a job to end (long polls,
                                                  ``GET /v1/jobs/{id}?wait=``): how many clients
                                                  follow jobs this way; a client (or a test) can
                                                  see that its long poll has reached the service
``tseg_device_memory_used_bytes``      gauge      per CUDA device (``device`` label); absent on CPU
``tseg_device_memory_total_bytes``     gauge      per CUDA device
``process_resident_memory_bytes``      gauge      this process's resident memory
=====================================  =========  ==================================================

The format is a few lines of text; writing it here keeps the runtime free of another dependency.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections import deque
from typing import Any, Iterable, Iterator, Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RATE_WINDOW_S = 60.0


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    def esc(v: Any) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) or abs(v) >= 1e15 else str(int(v))


class Histogram:
    """Cumulative buckets, sum and count (not thread-safe: :class:`Metrics` locks)."""

    def __init__(self, buckets: Iterable[float] = TIME_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append(f'{name}_bucket{{le="{_num(bound)}"}} {total}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_num(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


def process_rss_bytes() -> int | None:
    """Resident memory of this process (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def device_memory(device: int) -> tuple[int, int] | None:
    """``(used, total)`` bytes of a CUDA device, or None without CUDA."""
    from tseg.runtime.execution.cuda import cudart, device_count

    rt = cudart()
    if rt is None or device_count() <= device:
        return None
    result = rt.cudaSetDevice(device)
    if int(result[0] if isinstance(result, tuple) else result) != 0:
        return None
    err, free, total = rt.cudaMemGetInfo()
    return (int(total) - int(free), int(total)) if int(err) == 0 else None


class Metrics:
    """Counters and histograms the runner and the service update; :meth:`render` writes them."""

    def __init__(self, version: str = "") -> None:
        self._lock = threading.Lock()
        self.version = version
        self.ready = False
        self.submitted: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.queue = Histogram()
        self.run = Histogram()
        self.first_tile_h = Histogram()
        self.tiles: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self.long_polls = 0

    def set_ready(self, ready: bool) -> None:
        self.ready = bool(ready)

    def job_submitted(self, how: str) -> None:
        with self._lock:
            self.submitted[how] = self.submitted.get(how, 0) + 1

    def job_started(self, queue_s: float) -> None:
        with self._lock:
            self.queue.observe(max(0.0, queue_s))

    def job_finished(self, state: str, run_s: float) -> None:
        with self._lock:
            self.finished[state] = self.finished.get(state, 0) + 1
            self.run.observe(max(0.0, run_s))

    def first_tile(self, seconds: float) -> None:
        with self._lock:
            self.first_tile_h.observe(max(0.0, seconds))

    @contextlib.contextmanager
    def long_poll(self) -> Iterator[None]:
        """Count a long poll as waiting while the ``with`` block runs (``tseg_long_polls_waiting``)."""
        with self._lock:
            self.long_polls += 1
        try:
            yield
        finally:
            with self._lock:
                self.long_polls -= 1

    def tile(self, worker: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.tiles[worker] = self.tiles.get(worker, 0) + 1
            recent = self._recent.setdefault(worker, deque())
            recent.append(now)
            while recent and recent[0] < now - RATE_WINDOW_S:
                recent.popleft()

    def tile_rate(self, worker: str) -> float:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.get(worker, deque())
            return sum(1 for t in recent if t >= now - RATE_WINDOW_S) / RATE_WINDOW_S

    def render(self, job_states: Mapping[str, int], devices: Iterable[int] = (),
               workers: Iterable[str] = ()) -> str:
        """The exposition text; ``job_states`` from the store, ``devices`` the CUDA devices in use."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, Any], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{_labels(labels)} {_num(value)}" for labels, value in samples)

        workers = list(workers)
        rates = {w: self.tile_rate(w) for w in workers}
        with self._lock:
            metric("tseg_build_info", "gauge", "tseg-rt version.", [({"version": self.version}, 1)])
            metric("tseg_ready", "gauge", "1 when every device's engine is loaded and warmed up.",
                   [({}, 1 if self.ready else 0)])
            metric("tseg_jobs", "gauge", "Jobs in the store by state.",
                   [({"state": s}, n) for s, n in job_states.items()])
            metric("tseg_jobs_submitted_total", "counter", "Job submissions by result.",
                   [({"result": k}, v) for k, v in sorted(self.submitted.items())])
            metric("tseg_jobs_finished_total", "counter", "Jobs ended by final state.",
                   [({"state": k}, v) for k, v in sorted(self.finished.items())])
            for name, hist, text in (("tseg_job_queue_seconds", self.queue, "Seconds from submission to start."),
                                     ("tseg_job_run_seconds", self.run, "Seconds from start to end of a job."),
                                     ("tseg_time_to_first_tile_seconds", self.first_tile_h,
                                      "Seconds from the start of a job to its first tile merged.")):
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} histogram")
                lines.extend(hist.lines(name))
            metric("tseg_tiles_total", "counter", "Tiles run through the network.",
                   [({"worker": w}, self.tiles.get(w, 0)) for w in workers])
            metric("tseg_long_polls_waiting", "gauge", "Requests waiting now for a job to end (?wait= long polls).",
                   [({}, self.long_polls)])
        metric("tseg_tile_rate", "gauge", "Tiles per second over the last minute.",
               [({"worker": w}, round(rates[w], 4)) for w in workers])
        used, total = [], []
        for d in devices:
            mem = device_memory(d)
            if mem is not None:
                used.append(({"device": d}, mem[0]))
                total.append(({"device": d}, mem[1]))
        if used:
            metric("tseg_device_memory_used_bytes", "gauge", "CUDA device memory in use.", used)
            metric("tseg_device_memory_total_bytes", "gauge", "CUDA device memory.", total)
        rss = process_rss_bytes()
        if rss is not None:
            metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [({}, rss)])
        return "\n".join(lines) + "\n"
