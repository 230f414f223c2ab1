"""Helpers for the benchmarks: generated slides cached on disk, timing and peak memory."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable

CACHE = Path(os.environ.get("TSEG_BENCH_CACHE", Path.home() / ".cache" / "tseg-rt" / "bench"))


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux); also resets the peak to it, so
    that ``peak_rss_mb() - rss_mb()`` taken before a measurement is the measurement's own."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    reset_peak_rss()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (the unit of :func:`rss_mb`) since start or
    :func:`reset_peak_rss`.

    Read from ``VmHWM`` (Linux): ``ru_maxrss`` is inherited by a spawned child from its parent,
    so it would report the parent's peak in :func:`in_fresh_process`.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB in /proc are KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset the peak (``VmHWM``) to the current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def cached_slide(name: str, **kwargs: Any) -> Path:
    """A synthetic slide generated once per parameter set and kept in ``$TSEG_BENCH_CACHE``."""
    from tseg.runtime.evaluation.synthetic import generate_slide

    key = "-".join(f"{k}{v}".replace(".", "p") for k, v in sorted(kwargs.items()))
    path = CACHE / f"{name}-{key}.tiff"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        generate_slide(path, **kwargs)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s")
    return path


def _child(fn: Callable[..., dict], args: tuple, queue: "mp.Queue[dict]") -> None:
    try:
        queue.put(fn(*args))
    except BaseException as exc:  # report, never hang the parent
        queue.put({"error": repr(exc)})


#: How long the result of a child found ended is still waited for (see :func:`in_fresh_process`).
LAST_RESULT_WAIT_S = 5.0


def in_fresh_process(fn: Callable[..., dict], *args: Any) -> dict:
    """Run ``fn(*args)`` in a new process (so peak RSS is its own) and return its dict.

    The queue is read a second at a time, so that a child killed without a word (out of memory)
    is noticed. A child found ended is not yet taken for dead: its result may have arrived just
    after a read gave up (it puts the result, then exits), so the queue is read once more, for up
    to :data:`LAST_RESULT_WAIT_S`, before the child is reported dead with its exit code."""
    ctx = mp.get_context("spawn")
    queue: "mp.Queue[dict]" = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    import queue as queue_module

    while True:  # a child killed (e.g. out of memory) never reports: do not wait for it forever
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                try:  # it reported and exited between the read above and is_alive()
                    result = queue.get(timeout=LAST_RESULT_WAIT_S)
                    break
                except queue_module.Empty:
                    pass
                proc.join()
                raise RuntimeError(f"{getattr(fn, '__name__', fn)} died with exit code {proc.exitcode}"
                                   + (" (killed: out of memory?)" if proc.exitcode == -9 else ""))
    proc.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def write_json(path: str | os.PathLike[str] | None, data: dict) -> None:
    text = json.dumps(data, indent=2)
    print(text)
    if path:
        Path(path).write_text(text)


def shared_slide(name: str) -> str | None:
    """A real slide from ``$TSEG_SHARED_DATA`` or ``../shared/data`` beside the repository, if present."""
    root = os.environ.get("TSEG_SHARED_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    path = Path(root) / "slides" / name
    return str(path) if path.exists() else None
