"""A result folder's ``summary.json``: its name and how it is read back (by resume decisions,
re-post-processing and the cohort report); and the size its ``overlay.png`` may claim before the
cohort report decodes it (:func:`overlay_problem`)."""

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


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header (its IHDR chunk), None when ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def overlay_problem(folder: Path, data: bytes) -> str | None:
    """Why the result ``folder``'s overlay (``data``, its bytes) must not be decoded, from its
    header alone: not a PNG, or larger than the overlay tseg-rt draws of the map size its summary
    states (without one: of the largest slide the size checks accept). A 608 KB PNG can claim
    25000 x 25000 px, 1.9 GB decoded."""
    from tseg.runtime.outputs.overlay import overlay_size_bound
    from tseg.runtime.wsi.limits import MAX_SLIDE_MM
    from tseg.runtime.wsi.mpp import OVERVIEW_MPP

    size = png_size(data)
    if size is None:
        return "not a PNG image"
    side = int(MAX_SLIDE_MM * 1000 / OVERVIEW_MPP)
    map_size: Any = (side, side)
    try:
        stated = (read_summary(folder) or {}).get("slide", {}).get("size_at_overview_mpp")
        if isinstance(stated, list) and len(stated) == 2 and all(type(v) is int and 0 < v <= 10 * side
                                                                 for v in stated):
            map_size = stated
    except (OutputError, AttributeError):
        pass
    bound = overlay_size_bound(*map_size)
    if size[0] > bound[0] or size[1] > bound[1]:
        return (f"its header claims {size[0]} x {size[1]} px, more than the {bound[0]} x {bound[1]} px of the "
                f"overlay of a {map_size[0]} x {map_size[1]} px map; not decoded")
    return None
