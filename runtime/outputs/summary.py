"""A result folder's ``summary.json``: its name and how it is read back (by resume decisions,
re-post-processing and the cohort report)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tseg.runtime.errors import OutputError
from tseg.runtime.util.safeio import UnsafeFileError, read_json

SUMMARY = "summary.json"


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The folder's ``summary.json``, or None when absent; OutputError when unreadable, and when
    it or its folder is a symbolic link (a results folder is never read through links)."""
    path = folder / SUMMARY
    if not os.path.lexists(path):
        return None
    redo = "rerun `tseg-rt run --overwrite` for its slide"
    try:  # never through a link (the folder or the file), never a FIFO or device (safeio)
        data = read_json(path, below=folder.parent)
    except json.JSONDecodeError as exc:
        raise OutputError(path, f"corrupt (not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}); "
                                f"{redo}") from exc
    except UnicodeDecodeError as exc:
        raise OutputError(path, f"corrupt (not UTF-8 text); {redo}") from exc
    except UnsafeFileError as exc:
        raise OutputError(path, f"unreadable: it {exc.what}") from exc
    except OSError as exc:
        raise OutputError(path, f"unreadable ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise OutputError(path, f"corrupt (not a JSON object); {redo}")
    return data
