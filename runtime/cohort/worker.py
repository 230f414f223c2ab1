"""Who is processing a slide: host, process and the scheduler's job, in one line.

Written into each result's ``summary.json`` (``worker``), each failure record and each lock file,
and shown in ``cohort.csv``'s ``worker`` column and in "being processed by ..." messages, so a
slide that failed or is still running on a cluster can be traced to its node and job (a Slurm
log file is named after the job). The scheduler's identity comes from the environment it sets
for its tasks: Slurm's ``SLURM_ARRAY_JOB_ID`` / ``SLURM_ARRAY_TASK_ID`` (an array task, written
``1234_5`` as ``squeue`` and ``scancel`` take it) or ``SLURM_JOB_ID`` (a plain job); the
``SLURM_JOB_ID`` of an array task (its own job number, which ``scontrol`` also takes) follows
in parentheses. Nothing else is read, and no scheduler command is run.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping


def slurm_job(environ: Mapping[str, str] | None = None) -> str:
    """``"1234_5 (job 1240)"`` for a Slurm array task, ``"1240"`` for a plain job, "" outside Slurm."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID", "").strip()
    array, task = env.get("SLURM_ARRAY_JOB_ID", "").strip(), env.get("SLURM_ARRAY_TASK_ID", "").strip()
    if array and task:
        return f"{array}_{task}" + (f" (job {job})" if job and job != array else "")
    return job


def worker_info(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """This process as a lock file records it: ``pid``, ``host`` and, in a Slurm job, ``slurm``."""
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    job = slurm_job(environ)
    if job:
        info["slurm"] = job
    return info


def describe_worker(environ: Mapping[str, str] | None = None) -> str:
    """``"slurm 1234_5 (job 1240) on node17, pid 4711"``, or ``"node17, pid 4711"`` outside Slurm."""
    return describe(worker_info(environ))


def describe(info: Mapping[str, Any]) -> str:
    """One line from what :func:`worker_info` returned (or a lock file holds)."""
    where = f"{info.get('host', '?')}, pid {info.get('pid', '?')}"
    return f"slurm {info['slurm']} on {where}" if info.get("slurm") else where
