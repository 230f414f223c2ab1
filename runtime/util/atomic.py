"""Writing files so that nothing half-written ever stands under a final name.

Every file tseg-rt writes goes to a hidden temporary name beside its destination and is renamed
into place when complete. The temporary name carries the process id and a random part: processes
on different machines (array tasks writing one cohort report on shared storage, containers whose
process ids repeat) never write the same temporary file. An ``OSError`` (a full disk, a read-only folder) becomes an
:class:`~tseg.runtime.errors.OutputError` naming the file; the temporary file is removed.
"""

from __future__ import annotations

import csv
import errno
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from tseg.runtime.errors import OutputError


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], Any], keep_suffix: bool = False) -> Path:
    """Call ``writer(tmp)`` and rename ``tmp`` to ``path``; ``keep_suffix`` for writers that pick
    the format from the extension (OpenCV, matplotlib)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp" + (path.suffix if keep_suffix else ""))
    try:
        writer(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise OutputError(path, f"cannot write: {reason}. Free space or choose another folder; nothing "
                                "was left half-written") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]],
              fieldnames: Sequence[str] | None = None) -> Path:
    def writer(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(fieldnames or rows[0]))
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, writer)
