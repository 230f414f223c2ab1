"""run_jobs: every job runs once, on the calling thread or a pool, and errors are not lost."""

from __future__ import annotations

import threading

import pytest

from tseg.runtime.util.parallel import run_jobs


@pytest.mark.parametrize("threads", [1, 3])
def test_every_job_runs_once_and_the_first_error_is_raised(threads):
    seen, names = [], set()
    lock = threading.Lock()

    def work(job):
        with lock:
            seen.append(job)
            names.add(threading.current_thread().name)
        if job in (5, 7):
            raise ValueError(f"job {job}")

    with pytest.raises(ValueError, match="job 5"):
        run_jobs(work, range(10), threads, "tseg-test")
    assert (sorted(seen) == list(range(10))) if threads > 1 else (seen == list(range(6)))
    if threads > 1:
        assert all(n.startswith("tseg-test") for n in names)
    else:
        assert names == {threading.current_thread().name}
