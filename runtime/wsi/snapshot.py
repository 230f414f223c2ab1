"""Noticing that a slide changed while it was read.

A slide is read over seconds to minutes. A scanner or a copy still writing it, or someone replacing
it, changes it under the reader, which then fails with whatever the half-written bytes cause
("chunk ... is truncated") or, worse, reads a mix of two files without failing. The
:class:`~tseg.runtime.execution.segmenter.Segmenter` takes a :func:`snapshot` of the slide's files
(size, modification time and inode of each) before it opens the slide and compares after reading
its pixels, and when a read fails: a difference is reported as
:class:`~tseg.runtime.errors.SlideChangedError`, "the file changed while it was read", whatever the
reader said. (A batch also compares the content fingerprint it took at the start,
:mod:`tseg.runtime.cohort.resume`.)

The files of a slide: the file; for MIRAX, also the files of its companion folder; for a DICOM
series (a folder, or a file of one), the regular files of its folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

Snapshot = tuple[tuple[str, int, int, int], ...]


def slide_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files whose change changes the slide at ``path``."""
    p = Path(path)
    if p.is_dir():
        folder = p
    elif p.suffix.lower() == ".dcm":
        folder = p.parent
    else:
        files = [p]
        if p.suffix.lower() == ".mrxs" and p.with_suffix("").is_dir():
            files += sorted(q for q in p.with_suffix("").iterdir() if q.is_file())
        return files
    return sorted(q for q in folder.iterdir() if not q.name.startswith(".") and q.is_file())


def snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """``(name, size, mtime_ns, inode)`` of each of the slide's files (missing ones as -1)."""
    state = []
    for f in slide_files(path):
        try:
            st = os.stat(f)
            state.append((f.name, st.st_size if stat.S_ISREG(st.st_mode) else -2, st.st_mtime_ns, st.st_ino))
        except OSError:
            state.append((f.name, -1, -1, -1))
    return tuple(state)


def change(path: str | os.PathLike[str], before: Snapshot) -> str | None:
    """What changed in the slide's files since ``before``, in words, or None."""
    try:
        after = snapshot(path)
    except OSError as exc:
        return f"it can no longer be listed ({exc.strerror or exc})"
    if after == before:
        return None
    old, new = {s[0]: s for s in before}, {s[0]: s for s in after}
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None:
            return f"{name} appeared"
        if b is None or b[1] == -1:
            return f"{name} was removed"
        if a[3] != b[3]:
            return f"{name} was replaced by another file"
        if a[1] != b[1]:
            return f"{name} changed size from {a[1]} to {b[1]} bytes"
        return f"{name} was modified"
    return "its files changed"
