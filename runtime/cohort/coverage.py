"""Which slides of a cohort have a result: finished, failed, running or not run.

A results folder alone cannot say which slides are missing: a task that was cancelled, timed out
or never started leaves nothing behind. Given the cohort (the slides ``run`` was given, listed by
the same :func:`tseg.runtime.cohort.slide_lists.collect_slides`), :func:`locate` places every slide:

* **its result** — a row of the folder (:func:`tseg.runtime.cohort.report.collect_rows`) whose
  recorded slide is this slide's resolved path (``done``, or ``failed`` with its reason); where
  the folder holds two, the one in the folder ``run`` would use (``<stem>-<hash>`` when it
  exists, as :func:`tseg.runtime.cohort.locks.claim_result_folder` decides). A slide moved since
  its result was made is found by its content fingerprint, as ``run`` finds it; only then are
  slides read (2 MiB each), and only those without a result by path. A folder named as this
  slide's whose summary is unreadable is ``unreadable``;
* **running** — no finished result, and a live process holds the slide's lock
  (``RESULTS/.<name>.lock``, ``flock``: seen from any node of a shared file system); the lock
  names the process, its host and its Slurm job;
* **not run** — none of these.

Which finished results are current for a model and settings is ``run``'s decision
(:func:`tseg.runtime.cohort.resume.decide`), not the report's: a result made with another model
counts as finished here. Rows for slides outside the cohort are counted, not placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tseg.runtime.cohort.identity import SlideIdentity, fingerprint, name_budget, result_stem, slide_stem
from tseg.runtime.cohort.locks import describe_holder, live_holder
from tseg.runtime.outputs.summary import read_summary
from tseg.runtime.errors import OutputError, TsegError


#: Statuses of a cohort's slides without a result (the others are the folder's rows' own).
RUNNING = "running"
NOT_RUN = "not run"


@dataclass(frozen=True)
class SlideState:
    """Where one slide of the cohort stands. ``row`` indexes the folder's rows (None: no row);
    ``name`` is its result folder's name (the one ``run`` would use, for a slide not run)."""

    slide: str
    status: str
    name: str
    row: int | None = None
    reason: str = ""


def _names(slide: Path, resolved: str, budget: int) -> tuple[str, str]:
    """The two folder names ``run`` may give a slide: its stem, and stem-<hash of its path> (each
    cut to ``budget`` bytes as ``run`` cuts them: :func:`~tseg.runtime.cohort.identity.fit_name`)."""
    try:
        stem = result_stem(slide)
    except (TsegError, OSError):
        stem = slide_stem(slide)
    return SlideIdentity(resolved, "", 0, stem).folder_names(budget)


def _fingerprint(slide: Path) -> str | None:
    try:
        return fingerprint(slide)[0]
    except (TsegError, OSError):
        return None


def locate(slides: Sequence[Path], out: Path, rows: Sequence[Mapping[str, Any]]) -> list[SlideState]:
    """The state of every slide in ``slides`` (in their order), from the folder's ``rows``."""
    by_path: dict[str, list[int]] = {}
    by_folder: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.get("slide"):
            by_path.setdefault(str(row["slide"]), []).append(i)
        if row.get("folder"):
            by_folder.setdefault(str(row["folder"]), i)
    states: list[SlideState] = []
    unplaced: list[tuple[int, Path, str, str, str]] = []
    budget = name_budget(out)
    for slide in slides:
        resolved = str(Path(slide).resolve())
        stem, hashed = _names(Path(slide), resolved, budget)
        found = by_path.get(resolved, [])
        if found:
            i = next((j for j in found if rows[j].get("folder") == hashed), found[0])
            states.append(SlideState(resolved, str(rows[i]["status"]), str(rows[i].get("folder") or stem), i))
            continue
        unplaced.append((len(states), Path(slide), resolved, stem, hashed))
        states.append(SlideState(resolved, NOT_RUN, stem))
    _find_moved(unplaced, out, rows, states)
    for index, slide, resolved, stem, hashed in unplaced:
        if states[index].status != NOT_RUN:
            continue
        states[index] = _unfinished(out, rows, by_folder, resolved, stem, hashed)
    return states


def _find_moved(unplaced: list[tuple[int, Path, str, str, str]], out: Path, rows: Sequence[Mapping[str, Any]],
                states: list[SlideState]) -> None:
    """Slides whose result was made under a path that no longer exists (same content)."""
    orphans: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.get("status") != "done" or not row.get("slide") or Path(str(row["slide"])).exists():
            continue
        try:
            summary = read_summary(out / str(row["folder"])) or {}
        except OutputError:
            continue
        recorded = summary.get("slide") if isinstance(summary.get("slide"), dict) else {}
        if recorded.get("fingerprint"):
            orphans.setdefault(str(recorded["fingerprint"]), i)
    if not orphans:
        return
    for index, slide, resolved, stem, _hashed in unplaced:
        i = orphans.get(_fingerprint(slide) or "")
        if i is not None:
            states[index] = SlideState(resolved, "done", str(rows[i]["folder"]), i,
                                       f"moved from {rows[i]['slide']}")


def _unfinished(out: Path, rows: Sequence[Mapping[str, Any]], by_folder: Mapping[str, int], resolved: str,
                stem: str, hashed: str) -> SlideState:
    """A slide without a result by path or content: running, unreadable or not run."""
    for name in (hashed, stem):
        held, holder = live_holder(out / f".{name}.lock")
        if held and (not holder or holder.get("slide") in (None, resolved)):
            return SlideState(resolved, RUNNING, name, reason=f"being processed by {describe_holder(holder)}")
    for name in (hashed, stem):
        i = by_folder.get(name)
        if i is not None and rows[i].get("status") == "unreadable" and not rows[i].get("slide"):
            return SlideState(resolved, "unreadable", name, i)
    # The name `run` would give it: stem-<hash> when that exists or <stem>/ is another slide's.
    taken = (out / hashed).exists() or (out / stem).exists()
    return SlideState(resolved, NOT_RUN, hashed if taken else stem, reason=f"no result in {out}")
