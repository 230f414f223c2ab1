"""The slides of a cohort, as ``tseg-rt run`` and ``tseg-rt report`` both see them.

A cohort is given the way ``run`` takes it: slide files, DICOM series folders and folders searched
recursively (:func:`tseg.runtime.cohort.batch.find_slides`, which skips the results folder and
every tseg-rt result folder), and/or the ``path`` column of a slides CSV
(:func:`tseg.runtime.cohort.batch.read_slides_csv`). One function lists them for both commands,
so the report names exactly the slides, and the result folders, that ``run`` would process:
a slide that never ran cannot go missing from the report because the two searched differently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tseg.runtime.cohort.batch import find_slides


@dataclass
class CohortSlides:
    """The slides in the order ``run`` processes them (found slides sorted, then slides only in
    the CSV in its order), and each CSV row's settings keyed by the slide's path as listed."""

    slides: list[Path]
    per_slide: dict[str, dict[str, Any]] = field(default_factory=dict)


def gather_slides(inputs: Sequence[str | os.PathLike[str]] | None,
                  table_rows: Sequence[tuple[Path, dict[str, Any]]], out: Path) -> CohortSlides:
    """The cohort of ``inputs`` and the rows of a slides CSV (already read and checked), the
    results folder ``out`` excluded from the search. A slide named twice (a folder and a CSV
    row) is one slide, with the CSV row's settings. Raises NoSlidesFoundError (a path that does
    not exist, or nothing found)."""
    found = find_slides(inputs, exclude=out) if inputs else []
    by_resolved = {p.resolve(): p for p in found}
    per_slide: dict[str, dict[str, Any]] = {}
    for path, row in table_rows:
        for p in find_slides([path], exclude=out):
            resolved = p.resolve()
            if resolved not in by_resolved:
                found.append(p)
                by_resolved[resolved] = p
            per_slide[str(by_resolved[resolved])] = row
    return CohortSlides(found, per_slide)
