"""Running independent jobs on a few threads (block reads, merge bands: NumPy, OpenCV and the
decoders release the GIL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


def run_jobs(work: Callable[[T], object], jobs: Iterable[T], threads: int, name: str) -> None:
    """Call ``work(job)`` for every job: in this thread when ``threads <= 1``, else on a pool of
    ``threads`` named ``name``. Waits for all; the first job's error (in submission order) is raised."""
    jobs = list(jobs)
    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            work(job)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        for future in [pool.submit(work, job) for job in jobs]:
            future.result()
