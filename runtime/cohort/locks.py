"""Per-result-folder locks: two processes (or nodes sharing storage) never write one result.

A lock is ``OUT/.<name>.lock``, held with ``flock`` (so a killed process releases it), holding
who holds it (pid, host, Slurm task, slide). The result-folder name of a slide is chosen under its lock
(:func:`claim_result_folder`), so that two processes never pick the same name for two slides.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from tseg.runtime.cohort.identity import SlideIdentity, match_slide, name_budget, recorded_slide
from tseg.runtime.cohort.worker import worker_info
from tseg.runtime.errors import OutputError
from tseg.runtime.util.safeio import UnsafeFileError, kind_of, open_fd, read_json

log = logging.getLogger(__name__)

#: What a lock file holds at most (who holds it: pid, host, slide); more is not a tseg-rt lock.
HOLDER_BYTES = 64 * 1024


class LockBusy(Exception):
    """The lock is held by another live process; ``holder`` is what it wrote (or None)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{path}: held by {describe_holder(holder)}")


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    if not holder:
        return "another tseg-rt process"
    job = f" (slurm {holder['slurm']})" if holder.get("slurm") else ""
    return f"tseg-rt process {holder.get('pid', '?')} on {holder.get('host', '?')}{job}"


def read_holder(path: Path, tries: int = 10, pause_s: float = 0.05) -> dict[str, Any] | None:
    """What the holder of a lock wrote into it (retried briefly while it is being written)."""
    for _ in range(tries):
        try:
            data = read_json(path, follow=False, limit=HOLDER_BYTES)
            if isinstance(data, dict):
                return data
        except UnsafeFileError:
            return None  # not a lock tseg-rt made
        except (OSError, ValueError):
            pass
        time.sleep(pause_s)
    return None


class SlideLock:
    """An exclusive per-result-folder lock (``flock``), released on :meth:`release` or process
    death. The file holds who holds it (pid, host, slide). ``wait`` blocks until it is free.

    The lock file is removed when released, so finished and failed slides leave none; a waiter
    that locked a file removed meanwhile notices (different inode) and locks the new one.
    Raises :class:`LockBusy` when held elsewhere (and not waiting), and
    :class:`~tseg.runtime.errors.OutputError` when the lock file cannot be created.
    """

    def __init__(self, path: Path, holder: Mapping[str, Any] | None = None, wait: bool = False,
                 poll_s: float = 0.25, on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> None:
        self.path = path
        waited = False
        while True:
            try:  # never through a planted link, never blocking on a FIFO (safeio)
                fd = open_fd(path, os.O_RDWR | os.O_CREAT, follow=False)
            except OSError as exc:
                reason = {errno.ENOSPC: "no space or inodes left on the device",
                          errno.EISDIR: "a folder is in the way"}.get(exc.errno, exc.strerror or str(exc))
                if isinstance(exc, UnsafeFileError):
                    reason = f"it {exc.what}"
                raise OutputError(path, f"cannot create the slide's lock file: {reason}; free space or "
                                        "remove what is in the way, or choose another --out") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder_now = read_holder(path)
                if not wait:
                    raise LockBusy(path, holder_now) from None
                if on_wait and not waited:
                    on_wait(holder_now)
                waited = True
                time.sleep(poll_s)
                continue
            except OSError as exc:
                os.close(fd)
                raise OutputError(path, f"cannot lock: {exc.strerror or exc}") from exc
            try:
                same = os.fstat(fd).st_ino == os.lstat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by its previous holder after we opened it: lock the new one
                os.close(fd)
                continue
            break
        self._fd: int | None = fd
        info = {**worker_info(), **dict(holder or {})}  # pid, host, Slurm task
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # who holds it is informative only

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def remove_stale_locks(out: Path) -> int:
    """Remove lock files in ``out`` that no live process holds (left by killed runs)."""
    removed = 0
    for path in out.glob(".*.lock"):
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a link, FIFO, socket: not a lock tseg-rt made
            log.warning("%s is %s, not a lock file tseg-rt made; removed (what it points to is untouched)",
                        path, kind_of(mode))
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
            continue
        try:
            SlideLock(path).release(remove=True)
            removed += 1
        except (LockBusy, OutputError):
            continue
    return removed


def claim_result_folder(out: Path, identity: SlideIdentity, wait: bool = False,
                        on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> tuple[str, SlideLock]:
    """The result-folder name for ``identity`` in ``out``, with its lock held.

    Raises :class:`LockBusy` when another live process works on this slide (or, not waiting,
    on a slide whose identity it has not written yet)."""
    holder = {"slide": identity.path, "fingerprint": identity.fingerprint}
    stem, hashed = identity.folder_names(name_budget(out))

    def lock(name: str) -> SlideLock:
        return SlideLock(out / f".{name}.lock", holder, wait=wait, on_wait=on_wait)

    if (out / hashed).exists():
        return hashed, lock(hashed)
    try:
        plain = SlideLock(out / f".{stem}.lock", holder, wait=False)
    except LockBusy as busy:
        if busy.holder and busy.holder.get("slide") and busy.holder.get("slide") != identity.path:
            return hashed, lock(hashed)  # a live process is making another slide's result there
        if not wait:
            raise
        plain = lock(stem)
    folder = out / stem
    if folder.is_symlink():  # planted: never read through; the run replaces the link (not its target)
        return stem, plain
    recorded = recorded_slide(folder) if folder.exists() else None
    foreign = folder.exists() and recorded is None and (not folder.is_dir() or any(folder.iterdir()))
    if not foreign and (recorded is None or match_slide(recorded, identity) != "other"):
        return stem, plain
    plain.release(remove=True)
    return hashed, lock(hashed)


def live_holder(path: Path) -> tuple[bool, dict[str, Any] | None]:
    """Whether a live process holds the lock file ``path``, and what it wrote into it.

    Read-only: the file is never created or removed. The check takes a shared lock for an
    instant, so a process that tries to lock the slide at that very instant finds it busy and
    comes back to it (as it does for any other holder)."""
    try:
        fd = open_fd(path, follow=False)  # a FIFO, device or link planted as a lock: no holder, never a hang
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, read_holder(path, tries=3)
        except OSError:
            return False, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)
