"""Deterministic shards of a batch (``tseg-rt run --shard K/N``), for array jobs with no coordinator.

A slide belongs to shard ``int(sha256(resolved path)[:16], 16) % N``. The key is the path half of
the slide's identity (:mod:`tseg.runtime.cohort.resume`), not its content fingerprint: every array task
lists the whole cohort, and hashing 2 MiB of each of ten thousand slides in each of N tasks would
read the cohort's slides N times over shared storage for nothing. The path is resolved (symbolic
links followed), so a task started from another working folder, or given the cohort by another
relative path, computes the same shards; nodes must mount the cohort at the same path (as they
must to write results beside each other anyway).

N must stay the same for a cohort (take it from the job script, not from the array's size: a
resubmission of some tasks is a smaller array). The shard of a slide depends on nothing else: not on the other slides, their order, the number of
slides found, the date or the machine, so resubmitting a failed array task processes the same
slides, and the resume rules (locks, finished results skipped) make that safe.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Sequence, TypeVar

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.wsi.locator import slide_key

P = TypeVar("P", bound="str | os.PathLike[str]")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (Slurm's ``--array=0-N-1`` numbering)."""
    m = _SHARD.match(str(text))
    if not m:
        raise InvalidArgumentError(f"--shard takes K/N (this task's shard K of N, counted from 0), got {text!r}; "
                                   "in a Slurm array of 64 tasks: --shard $SLURM_ARRAY_TASK_ID/64")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise InvalidArgumentError(f"--shard {text}: the number of shards must be at least 1")
    if k >= n:
        raise InvalidArgumentError(f"--shard {text}: shards are numbered 0 to {n - 1} (as sbatch --array=0-{n - 1})")
    return k, n


def shard_key(slide: str | os.PathLike[str]) -> str:
    """What a slide's shard is computed from: its resolved path (a DICOMweb series: its URL)."""
    return slide_key(slide)


def shard_index(slide: str | os.PathLike[str], count: int) -> int:
    """The shard (0 to ``count`` - 1) that ``slide`` belongs to."""
    if count < 1:
        raise InvalidArgumentError(f"the number of shards must be at least 1, got {count}")
    digest = hashlib.sha256(shard_key(slide).encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest[:16], 16) % count


def select_shard(slides: Sequence[P], index: int, count: int) -> list[P]:
    """The slides of shard ``index`` of ``count``, in their given order."""
    if not 0 <= index < count:
        raise InvalidArgumentError(f"shard {index} of {count} does not exist (0 to {count - 1})")
    return [s for s in slides if shard_index(s, count) == index]
