"""A slides CSV (``tseg-rt run --csv``): which slides, each with its own settings.

Columns: ``path`` (relative paths are taken from the CSV's folder; a DICOMweb series URL), and optionally ``mpp`` (``X``
or ``X,Y`` µm/px) or ``mpp_x`` + ``mpp_y``, ``low``, ``high`` (0-255) and ``prune`` (true/false).
Empty cells mean "the run's setting". A cell a spreadsheet-safe writer prefixed with ``'``
(``'-x.tif``, as tseg-rt's own CSVs do) is read as written (:func:`restore_cell`).

**Streamed.** :func:`iter_slides_csv` reads one row at a time and checks it (InvalidArgumentError
naming the file, the row and the column); nothing holds the whole file, so a list of millions of
rows costs memory only for the distinct slides it names (what the batch keeps for each), not for
its rows: rows repeating a slide with the same settings are free. It works on a pipe too
(``--csv <(...)``): the file is read once. A long list reports its progress (rows read, and the
share of the file where its size is known) every few seconds to a ``progress`` callback, so that
reading millions of rows never looks like a hang.

**Conflicts.** Two rows that name the same slide (the same file after resolving the path:
``slides/s1.tif`` and ``./slides/s1.tif``, or a link to it) with different settings are an error
naming both rows and both settings (:func:`check_conflict`, used by
:func:`tseg.runtime.cohort.slide_lists.collect_slides`): the last one no longer silently wins.
Rows that repeat a slide with the same settings are one slide.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from tseg.runtime.errors import InvalidArgumentError
from tseg.runtime.util.spreadsheet import restore_cell
from tseg.runtime.wsi.locator import SlideRef, as_slide, is_remote
from tseg.runtime.wsi.mpp import parse_mpp

#: Columns a slides CSV may have besides ``path``, and how each is read.
SLIDES_CSV_COLUMNS = ("mpp", "mpp_x", "mpp_y", "low", "high", "prune")


#: How often (seconds) a long slides CSV reports its progress.
PROGRESS_EVERY_S = 5.0


class CsvProgress(NamedTuple):
    """How far the reading of a slides CSV is: rows so far, bytes read, the file's size (None on a
    pipe), and whether it is finished."""

    path: Path
    rows: int
    done_bytes: int | None
    total_bytes: int | None
    finished: bool

    def describe(self) -> str:
        """``slides.csv: 1,234,567 rows read (45 %)``."""
        share = (f" ({min(100.0, 100 * self.done_bytes / self.total_bytes):.0f} %)"
                 if self.total_bytes and self.done_bytes is not None and not self.finished else "")
        return f"{self.path}: {self.rows:,} rows read{share}{', done' if self.finished else ''}"


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


def _file_size(fh: Any) -> int | None:
    try:
        st = os.fstat(fh.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if st.st_size > 0 and os.path.isfile(fh.name) else None


def _bytes_read(fh: Any) -> int | None:
    try:
        return fh.buffer.tell()  # the binary buffer's position: ahead of the rows by at most a buffer
    except (OSError, ValueError, AttributeError):
        return None  # a pipe


def iter_slides_csv(path: str | os.PathLike[str], progress: Callable[[CsvProgress], None] | None = None,
                    every_s: float = PROGRESS_EVERY_S) -> Iterator[SlidesCsvRow]:
    """The rows of a slides CSV, read and checked one at a time (see the module docstring).
    ``progress`` is called every ``every_s`` seconds while rows are read, and once at the end if
    it was called before (a short list says nothing).

    Settings dicts of equal rows are one shared object (do not change them)."""
    p = Path(path)
    shared: dict[tuple, dict[str, Any]] = {}
    rows = 0
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            total = _file_size(fh) if progress is not None else None
            next_report = time.monotonic() + every_s
            reported = False
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
                if progress is not None and (n & 1023) == 0 and time.monotonic() >= next_report:
                    progress(CsvProgress(p, rows, _bytes_read(fh), total, False))
                    next_report, reported = time.monotonic() + every_s, True
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
            if reported and progress is not None:
                progress(CsvProgress(p, rows, total, total, True))
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
