"""A slides CSV (``tseg-rt run --csv``): which slides, each with its own settings.

Columns: ``path`` (relative paths are taken from the CSV's folder; a DICOMweb series URL), and optionally ``mpp`` (``X``
or ``X,Y`` µm/px) or ``mpp_x`` + ``mpp_y``, ``low``, ``high`` (0-255) and ``prune`` (true/false).
Empty cells mean "the run's setting". A cell a spreadsheet-safe writer prefixed with ``'``
(``'-x.tif``, as tseg-rt's own CSVs do) is read as written (:func:`restore_cell`).

**Streamed.** :func:`iter_slides_csv` reads one row at a time and checks it (InvalidArgumentError
naming the file, the row and the column); nothing holds the whole file, so a list of millions of
rows costs memory only for the distinct slides it names (what the batch keeps for each), not for
its rows: rows repeating a slide with the same settings are free. It works on a pipe too
(``--csv <(...)``): the file is read once.

**Conflicts.** Two rows that name the same slide (the same file after resolving the path:
``slides/s1.tif`` and ``./slides/s1.tif``, or a link to it) with different settings are an error
naming both rows and both settings (:func:`check_conflict`, used by
:func:`tseg.runtime.cohort.slide_lists.collect_slides`): the last one no longer silently wins.
Rows that repeat a slide with the same settings are one slide.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.util.spreadsheet import restore_cell
from tseg.runtime.wsi.locator import SlideRef, as_slide, is_remote
from tseg.runtime.wsi.mpp import parse_mpp

#: Columns a slides CSV may have besides ``path``, and how each is read.
SLIDES_CSV_COLUMNS = ("mpp", "mpp_x", "mpp_y", "low", "high", "prune")


class SlidesCsvRow(NamedTuple):
    """One row: its number (the header is row 1), the slide (a path, or a DICOMweb series URL)
    and its settings."""

    row: int
    path: SlideRef
    settings: dict[str, Any]


def _settings(row: Mapping[str, str], where: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if row.get("mpp"):
        settings["mpp"] = parse_mpp(row["mpp"], f"{where}: mpp")
    elif row.get("mpp_x") or row.get("mpp_y"):
        if not (row.get("mpp_x") and row.get("mpp_y")):
            raise InvalidArgumentError(f"{where}: give both mpp_x and mpp_y (or mpp)")
        settings["mpp"] = parse_mpp(f"{row['mpp_x']},{row['mpp_y']}", f"{where}: mpp_x,mpp_y")
    for key in ("low", "high"):
        if row.get(key):
            try:
                value = int(row[key])
            except ValueError:
                raise InvalidArgumentError(f"{where}: {key} must be an integer 0-255, got {row[key]!r}") from None
            if not 0 <= value <= 255:
                raise InvalidArgumentError(f"{where}: {key} must be 0-255, got {value}")
            settings[key] = value
    if row.get("prune"):
        flag = row["prune"].lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidArgumentError(f"{where}: prune must be true or false, got {row['prune']!r}")
        settings["prune"] = flag in ("true", "1", "yes")
    return settings


def iter_slides_csv(path: str | os.PathLike[str]) -> Iterator[SlidesCsvRow]:
    """The rows of a slides CSV, read and checked one at a time (see the module docstring).

    Settings dicts of equal rows are one shared object (do not change them)."""
    p = Path(path)
    shared: dict[tuple, dict[str, Any]] = {}
    rows = 0
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [restore_cell(c.strip()) for c in next(reader, [])]
            if "path" not in header:
                raise InvalidArgumentError(f"{p}: the slides CSV needs a 'path' column (has: "
                                           f"{', '.join(c for c in header if c) or 'none'})")
            unknown = [c for c in header if c and c != "path" and c not in SLIDES_CSV_COLUMNS]
            if unknown:
                raise InvalidArgumentError(f"{p}: unknown column(s) {', '.join(unknown)}; allowed: path, "
                                           + ", ".join(SLIDES_CSV_COLUMNS))
            for n, cells in enumerate(reader, start=2):
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                row = {name: restore_cell(cell.strip()) for name, cell in zip(header, cells) if name}
                where = f"{p}, row {n}"
                if not row.get("path"):
                    raise InvalidArgumentError(f"{where}: empty path")
                settings = _settings(row, where)
                key = tuple(sorted(settings.items()))
                if is_remote(row["path"]):  # a DICOMweb series URL
                    slide: SlideRef = as_slide(row["path"])
                else:
                    local = Path(row["path"]).expanduser()
                    slide = local if local.is_absolute() else p.parent / local
                rows += 1
                yield SlidesCsvRow(n, slide, shared.setdefault(key, settings))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgumentError(f"{p}: cannot read the slides CSV ({exc})") from None
    if not rows:
        raise InvalidArgumentError(f"{p}: the slides CSV has no rows")


def read_slides_csv(path: str | os.PathLike[str]) -> list[tuple[SlideRef, dict[str, Any]]]:
    """``(slide path, per-slide settings)`` of every row (:func:`iter_slides_csv`, held in memory;
    ``tseg-rt run`` streams instead)."""
    return [(r.path, r.settings) for r in iter_slides_csv(path)]


def _describe(settings: Mapping[str, Any]) -> str:
    def value(v: Any) -> str:
        return ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v)

    return ", ".join(f"{k} {value(v)}" for k, v in sorted(settings.items())) or "the run's settings"


def check_conflict(slide: str, first: tuple[int, Mapping[str, Any]], again: tuple[int, Mapping[str, Any]],
                   source: str) -> None:
    """InvalidArgumentError when two rows of ``source`` give one slide different settings."""
    if first[1] != again[1]:
        raise InvalidArgumentError(
            f"{source}: rows {first[0]} and {again[0]} name the same slide ({slide}) with different settings "
            f"({_describe(first[1])} / {_describe(again[1])}); keep one row per slide")
