"""Writing files so that nothing half-written ever stands under a final name.

Every file tseg-rt writes goes to a hidden temporary name beside its destination and is renamed
into place when complete. The temporary name carries the process id and a random part: processes
on different machines (array tasks writing one cohort report on shared storage, containers whose
process ids repeat) never write the same temporary file. An ``OSError`` (a full disk, a read-only folder) becomes an
:class:`~tseg.runtime.errors.OutputError` naming the file; the temporary file is removed.

A set of files that must change together (a result folder) is written as a whole new folder
beside the old one and switched in (:func:`replace_folder`): with Linux's atomic exchange of two
names where the file system has it, else by two renames.
"""

from __future__ import annotations

import csv
import errno
import ctypes
import itertools
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tseg.runtime.errors import OutputError
from tseg.runtime.util.spreadsheet import safe_cell


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], Any], keep_suffix: bool = False) -> Path:
    """Call ``writer(tmp)`` and rename ``tmp`` to ``path``; ``keep_suffix`` for writers that pick
    the format from the extension (OpenCV, matplotlib)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp" + (path.suffix if keep_suffix else ""))
    try:
        writer(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        reason, fix = why_not_written(exc)
        raise OutputError(path, f"cannot write: {reason}. {fix}; nothing was left half-written") from exc
    except BaseException:
        _discard(tmp)
        raise
    return path


def why_not_written(exc: OSError) -> tuple[str, str]:
    """Why a write failed and what to do, in the user's terms: ``(reason, fix)``."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full", "Free space or choose another folder"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"the folder is read-only or not writable by this user ({exc.strerror or exc})",
                "Make the folder writable, or work on a writable copy of it")
    return exc.strerror or str(exc) or type(exc).__name__, "Free space or choose another folder"


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it is there; a folder that refuses even that (read-only: EROFS)
    must not hide the error being reported."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="backslashreplace"))


def write_csv(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]],
              fieldnames: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts; ``fieldnames`` default to the first row's keys) as UTF-8 CSV.

    Every cell goes through :func:`~tseg.runtime.util.spreadsheet.safe_cell`: text a spreadsheet
    would run as a formula is neutralised, numbers stay numbers. Text that cannot be encoded
    (names with bytes that are not UTF-8, kept by Python as surrogates) is written with
    backslash escapes rather than failing. ``rows`` may be any iterable (streamed)."""
    iterator = iter(rows)
    first = next(iterator, None) if fieldnames is None else None
    columns = list(fieldnames) if fieldnames is not None else list(first or ())

    def writer(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
            w = csv.writer(fh)
            w.writerow([safe_cell(c) for c in columns])
            for row in itertools.chain([first] if first is not None else [], iterator):
                w.writerow([safe_cell(row.get(c)) if row.get(c) is not None else "" for c in columns])

    return atomic_write(path, writer)


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


#: renameat2(2): exchange two names atomically (Linux 3.15+, on ext4, xfs, btrfs, tmpfs, ...).
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step; False (nothing done) where the system or
    the file system cannot (not Linux, an old kernel or C library, a network file system)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_folder(new: Path, final: Path, old: Path) -> None:
    """Put the complete folder ``new`` in place of ``final`` (if there is one) and remove the
    previous one. The switch is one atomic exchange where the file system allows it; elsewhere the
    previous folder is first renamed to ``old`` (a name that the caller's clean-up of interrupted
    runs recognises), so an interruption between the two renames loses no new result."""
    if not (final.exists() or final.is_symlink()):
        os.rename(new, final)
    elif exchange_paths(new, final):
        remove_path(new)  # now the previous folder
    else:
        os.rename(final, old)
        try:
            os.rename(new, final)
        except BaseException:
            os.rename(old, final)  # the previous folder back under its name
            raise
        remove_path(old)


def linked_copy(folder: Path, staging: Path) -> None:
    """``staging``: a new folder holding every file of ``folder`` (sub-folders too) as hard links
    (copies where the file system has none), to be changed and switched in with
    :func:`replace_folder` while ``folder`` stays as it was. Links inside are not followed."""
    staging.mkdir()
    shutil.copymode(folder, staging)
    for entry in os.scandir(folder):
        source, target = Path(entry.path), staging / entry.name
        if entry.is_dir(follow_symlinks=False):
            linked_copy(source, target)
        elif entry.is_symlink():
            os.symlink(os.readlink(source), target)
        elif entry.is_file(follow_symlinks=False):
            try:
                os.link(source, target, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                shutil.copy2(source, target, follow_symlinks=False)
