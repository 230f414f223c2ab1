"""benchmarks/common.py: a child's result that arrives just after a read of the queue gave up,
the child then ending, is still its result (not "died with exit code 0")."""

from __future__ import annotations

import multiprocessing.queues
import os
import queue as queue_module
import time

import pytest

from benchmarks import common
from benchmarks.common import in_fresh_process

pytestmark = pytest.mark.slow  # every test here starts a process


def test_a_result_that_came_as_a_read_gave_up_is_kept(monkeypatch):
    """Every one-second read misses (as one that gave up just before the result came), until
    the child has ended: the result is then read from the queue."""
    real_get = multiprocessing.queues.Queue.get
    missed: list[float] = []

    def get(self, block=True, timeout=None):
        if timeout == 1.0:
            missed.append(timeout)
            time.sleep(0.05)
            raise queue_module.Empty
        return real_get(self, block, timeout)

    monkeypatch.setattr(multiprocessing.queues.Queue, "get", get)
    assert in_fresh_process(dict, [("answer", 42)]) == {"answer": 42}
    assert missed  # the one-second reads did miss it


def test_a_child_that_ends_without_a_result_is_reported_with_its_exit_code(monkeypatch):
    monkeypatch.setattr(common, "LAST_RESULT_WAIT_S", 0.1)  # nothing will come
    with pytest.raises(RuntimeError, match="_exit died with exit code 3"):
        in_fresh_process(os._exit, 3)
