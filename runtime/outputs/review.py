"""A reviewer's verdict on a result, kept with it: ``review.json`` in the result folder.

The verdict records the result it was given on (the SHA-256 of the folder's ``summary.json``,
which a new result always rewrites): a verdict on an earlier result is reported as *stale*, never
carried over to the new one. Written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tseg.runtime.errors import InvalidArgumentError, OutputError
from tseg.runtime.outputs.summary import SUMMARY
from tseg.runtime.util.atomic import write_text
from tseg.runtime.util.safeio import UnsafeFileError, read_bytes, read_json

REVIEW = "review.json"
VERDICTS = ("accept", "reject", "needs_correction")
MAX_NOTE_CHARS = 4000
MAX_REVIEWER_CHARS = 200


def result_fingerprint(folder: Path) -> str:
    """SHA-256 of the folder's ``summary.json`` (never through a link)."""
    try:
        return hashlib.sha256(read_bytes(folder / SUMMARY, below=folder.parent)).hexdigest()
    except (OSError, UnsafeFileError) as exc:
        raise OutputError(folder / SUMMARY, f"unreadable ({exc}); rerun `tseg-rt run` for its slide") from exc


def read_review(folder: Path) -> dict[str, Any] | None:
    """The folder's verdict with ``stale`` (True when given on an earlier result), or None."""
    path = folder / REVIEW
    if not os.path.lexists(path):
        return None
    try:
        data = read_json(path, below=folder.parent)
    except (OSError, UnsafeFileError, ValueError) as exc:
        raise OutputError(path, f"unreadable ({exc}); delete it and review the slide again") from exc
    if not isinstance(data, dict) or data.get("verdict") not in VERDICTS:
        raise OutputError(path, "not a verdict; delete it and review the slide again")
    data["stale"] = data.get("result_sha256") != result_fingerprint(folder)
    return data


def check_review(verdict: Any, note: Any = "", reviewer: Any = "") -> None:
    """Refuse a verdict that is not one of :data:`VERDICTS`, or over-long text."""
    if verdict not in VERDICTS:
        raise InvalidArgumentError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise InvalidArgumentError(f"the note must be text of at most {MAX_NOTE_CHARS} characters")
    if not isinstance(reviewer, str) or len(reviewer) > MAX_REVIEWER_CHARS:
        raise InvalidArgumentError(f"the reviewer must be a name of at most {MAX_REVIEWER_CHARS} characters")


def write_review(folder: Path, verdict: str, note: str = "", reviewer: str = "",
                 now: datetime | None = None) -> dict[str, Any]:
    """Record a verdict on the folder's current result; returns what :func:`read_review` will."""
    check_review(verdict, note, reviewer)
    record = {"verdict": verdict, "note": note, "reviewer": reviewer,
              "time": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
              "result_sha256": result_fingerprint(folder)}
    write_text(folder / REVIEW, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return {**record, "stale": False}


def review_columns(folder: Path) -> dict[str, str]:
    """The cohort columns of a folder's verdict: ``verdict`` ("" when none; "(stale)" appended
    when given on an earlier result), ``verdict_note``, ``reviewer``, ``reviewed_at``."""
    try:
        review = read_review(folder)
    except OutputError as exc:
        return {"verdict": "unreadable", "verdict_note": str(exc), "reviewer": "", "reviewed_at": ""}
    if review is None:
        return {"verdict": "", "verdict_note": "", "reviewer": "", "reviewed_at": ""}
    return {"verdict": review["verdict"] + (" (stale)" if review["stale"] else ""),
            "verdict_note": str(review.get("note") or ""), "reviewer": str(review.get("reviewer") or ""),
            "reviewed_at": str(review.get("time") or "")}
