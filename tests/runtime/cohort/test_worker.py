"""Who processed a slide: host, pid and the Slurm job, in locks, results and failure records."""

from __future__ import annotations

import json
import os
import socket

from tseg.runtime.cohort.locks import SlideLock, describe_holder
from tseg.runtime.cohort.worker import describe_worker, slurm_job, worker_info

ARRAY_TASK = {"SLURM_JOB_ID": "1240", "SLURM_ARRAY_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "5"}


def test_slurm_job_as_squeue_and_scancel_write_it():
    assert slurm_job(ARRAY_TASK) == "1234_5 (job 1240)"
    assert slurm_job({**ARRAY_TASK, "SLURM_JOB_ID": "1234"}) == "1234_5"  # the array's last task keeps its ID
    assert slurm_job({"SLURM_JOB_ID": "99"}) == "99"
    assert slurm_job({}) == ""
    host, pid = socket.gethostname(), os.getpid()
    assert describe_worker(ARRAY_TASK) == f"slurm 1234_5 (job 1240) on {host}, pid {pid}"
    assert describe_worker({}) == f"{host}, pid {pid}"
    assert worker_info({}) == {"pid": pid, "host": host}


def test_a_lock_names_the_slurm_task_holding_it(tmp_path, monkeypatch):
    for key, value in ARRAY_TASK.items():
        monkeypatch.setenv(key, value)
    lock = SlideLock(tmp_path / ".a.lock", {"slide": "/s/a.svs"})
    try:
        holder = json.loads((tmp_path / ".a.lock").read_text())
    finally:
        lock.release()
    assert holder["slurm"] == "1234_5 (job 1240)" and holder["slide"] == "/s/a.svs"
    assert describe_holder(holder) == f"tseg-rt process {os.getpid()} on {socket.gethostname()} (slurm 1234_5 (job 1240))"
    assert describe_holder({"pid": 1, "host": "n"}) == "tseg-rt process 1 on n"  # locks of older versions
