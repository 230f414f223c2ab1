"""One report for a whole cohort: ``cohort.csv`` and ``report.html`` in a results folder.

``tseg-rt report RESULTS/`` (and the end of every ``tseg-rt run``) reads what the folder holds,
whichever machines and runs made it:

* every result folder (``RESULTS/<name>/summary.json``) is a row: status, tissue and tumour
  area in mm², tumour fraction, regions, tiles run and skipped, seconds per stage, model and
  settings, and why a reviewer should look at it first;
* every failed slide is a row with its reason (and, in the ``worker`` column, the worker that
  reported it: a node or process to look at on a cluster). A batch records each failure in
  ``RESULTS/.tseg-report/failed/`` (one small JSON file per slide, keyed by a hash of its
  resolved path, written by whichever process ran the batch) and removes it once the slide
  is finished; of a failure and a result of the same slide, the newer is shown. A failure
  stays in the report until its slide finishes or its record is deleted (a report does not
  hide failures because a slide was taken out of the cohort);
* a folder that looks like a result but whose summary cannot be read is a row ``unreadable``.

Given the cohort (``tseg-rt report RESULTS --slides ... | --csv ...``, the inputs ``run`` takes),
the report lists exactly its slides, each once (:mod:`tseg.runtime.cohort.coverage`): those with
a result as above, and those without one as ``running`` (a live lock names the process, host and
Slurm job) or ``not run``, so a cancelled, timed-out or never-started task cannot hide its slides;
results in the folder for slides outside the cohort are counted (``outside``), not listed.
:data:`UNFINISHED` statuses make :func:`exit_status` non-zero.

``report.html`` is one static page: no server, no network (a Content-Security-Policy forbids
any fetch), inline CSS and JavaScript, the rows as JSON inside the page. Thumbnails are small
JPEG files (at most :data:`THUMBNAIL_PX` px a side) in ``RESULTS/.tseg-report/thumbs/``, made
from each result's ``overlay.png`` once (again only when the overlay changes) and linked
relatively, so the page stays a few hundred bytes a slide and loads only the thumbnails of the
rows shown. The table is sorted, filtered and paged in the browser (see
:mod:`tseg.runtime.cohort.report_page`).

Both files are written to a temporary name and renamed (:mod:`tseg.runtime.util.atomic`), so several
array tasks finishing at once each leave a complete report.

**Review first** (the paper is silent; these are our decisions): a finished slide is flagged when
no tissue was found, when its tumour fraction of tissue is within ``review_margin`` (default
1 %) of 0 or of 1, when its level-0 resolution was overridden (``--mpp`` or a slides CSV), or
when its colours were corrected (mislabelled YCbCr DICOM frames).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tseg.runtime.cohort.coverage import NOT_RUN, RUNNING, locate
from tseg.runtime.wsi.locator import slide_key
from tseg.runtime.util.atomic import atomic_write, write_csv, write_text
from tseg.runtime.util.safeio import check_regular, ensure_folder, open_regular, read_json
from tseg.runtime.errors import InvalidArgumentError, OutputError
from tseg.runtime.outputs.summary import overlay_problem

log = logging.getLogger(__name__)

COHORT_CSV = "cohort.csv"
REPORT_HTML = "report.html"
REPORT_DIR = ".tseg-report"
FAILED_DIR = "failed"
THUMBS_DIR = "thumbs"
THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 80
REVIEW_MARGIN = 0.01
#: Statuses of slides that did not finish: the report's exit status is non-zero.
UNFINISHED = ("failed", "unreadable", RUNNING, NOT_RUN)

#: Per-stage timings of a summary, in the order of the data flow.
STAGES = ("open_s", "overview_s", "background_s", "read_s", "infer_s", "merge_s", "wall_s", "postprocess_s",
          "polygons_s", "total_s")

#: The columns of ``cohort.csv``, in order.
COLUMNS = (
    "name", "slide", "status", "failure_reason", "review", "verdict", "verdict_note", "reviewer", "reviewed_at",
    "tissue_area_mm2", "tumour_area_mm2", "tumour_fraction", "regions",
    "tiles_total", "tiles_run", "tiles_skipped_background",
    *STAGES,
    "model_sha256", "model_path", "backend", "low", "high", "prune", "skip_background",
    "mpp_x", "mpp_y", "mpp_source", "colour_correction", "warnings",
    "vendor", "width_mm", "height_mm", "created", "worker", "folder",
)

#: The reviewer's verdict (``review.json``, :mod:`tseg.runtime.outputs.review`): a stale one says so.
REVIEW_COLUMNS = ("verdict", "verdict_note", "reviewer", "reviewed_at")

REVIEW_TEXT = {
    "no_tissue": "no tissue found",
    "fraction_near_0": "tumour fraction near 0",
    "fraction_near_1": "tumour fraction near 1",
    "mpp_overridden": "resolution overridden",
    "colours_corrected": "colours corrected",
}


# --- failures, recorded by batches ------------------------------------------------------------


def _record_file(out: Path, slide: str | os.PathLike[str]) -> Path:
    key = hashlib.sha1(slide_key(slide).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return out / REPORT_DIR / FAILED_DIR / f"{key}.json"


def record_outcome(out: str | os.PathLike[str], outcome: Any) -> None:
    """Keep a failed slide's reason in ``out`` for the report; forget it once the slide is
    finished (``outcome`` is a :class:`~tseg.runtime.cohort.outcomes.SlideOutcome`). Other statuses
    (``locked``) change nothing."""
    out = Path(out)
    path = _record_file(out, outcome.slide)
    if outcome.ok:
        if _real_folder(out / REPORT_DIR) and _real_folder(path.parent):  # never delete through a link
            path.unlink(missing_ok=True)
        return
    if outcome.status != "failed":
        return
    record = {"tseg_rt_failure": 1, "slide": slide_key(outcome.slide), "name": outcome.name,
              "error": outcome.error_cli or outcome.error or outcome.detail, "worker": outcome.worker,
              "host": socket.gethostname(), "failed_at": datetime.now(timezone.utc).isoformat()}
    try:
        ensure_folder(path.parent, out)
    except OSError as exc:
        raise OutputError(path.parent, f"cannot create the report's folder: {exc.strerror or exc}") from exc
    write_text(path, json.dumps(record, indent=2) + "\n")


def _real_folder(path: Path) -> bool:
    """``path`` is a folder and not a link to one (the report never reads through links)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _failures(out: Path) -> list[dict[str, Any]]:
    folder = out / REPORT_DIR / FAILED_DIR
    records = []
    real = _real_folder(out / REPORT_DIR) and _real_folder(folder)
    for path in sorted(folder.glob("*.json")) if real else []:
        try:
            data = read_json(path, below=out)
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable failure record, ignored (%s)", path, getattr(exc, "what", exc))
            continue
        if isinstance(data, dict) and data.get("tseg_rt_failure") and data.get("slide"):
            records.append(data)
    return records


# --- rows ---------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def review_flags(row: Mapping[str, Any], margin: float = REVIEW_MARGIN) -> list[str]:
    """Why a reviewer should look at a finished slide first (codes of :data:`REVIEW_TEXT`)."""
    flags = []
    tissue = _num(row.get("tissue_area_mm2"))
    fraction = _num(row.get("tumour_fraction"))
    if tissue is not None and tissue <= 0:
        flags.append("no_tissue")
    elif fraction is not None and fraction <= margin:
        flags.append("fraction_near_0")
    elif fraction is not None and fraction >= 1 - margin:
        flags.append("fraction_near_1")
    if row.get("mpp_source") == "override":
        flags.append("mpp_overridden")
    if row.get("colour_correction"):
        flags.append("colours_corrected")
    return flags


def row_from_summary(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A cohort row (the :data:`COLUMNS`) from a result folder's ``summary.json``."""

    def section(key: str) -> Mapping[str, Any]:
        value = summary.get(key)
        return value if isinstance(value, dict) else {}

    slide, areas, tiles, timings, settings = (section(k) for k in ("slide", "areas", "tiles", "timings_s", "settings"))
    backend = section("model").get("backend") or {}
    mpp = slide.get("mpp_level0") if isinstance(slide.get("mpp_level0"), list) else [None, None]
    size = slide.get("size_mm") if isinstance(slide.get("size_mm"), list) else [None, None]
    warnings = summary.get("warnings") if isinstance(summary.get("warnings"), list) else []
    row: dict[str, Any] = {
        "name": name, "slide": slide.get("path", ""), "status": "done", "failure_reason": "",
        "tissue_area_mm2": areas.get("tissue_area_mm2"), "tumour_area_mm2": areas.get("tumour_area_mm2"),
        "tumour_fraction": areas.get("tumour_fraction_of_tissue"), "regions": areas.get("regions"),
        "tiles_total": tiles.get("tiles_total"), "tiles_run": tiles.get("tiles_run"),
        "tiles_skipped_background": tiles.get("tiles_skipped_background"),
        **{stage: timings.get(stage) for stage in STAGES},
        "model_sha256": backend.get("sha256", ""), "model_path": backend.get("path", ""),
        "backend": backend.get("kind", ""), "low": settings.get("low"), "high": settings.get("high"),
        "prune": settings.get("prune"), "skip_background": settings.get("skip_background"),
        "mpp_x": mpp[0] if len(mpp) > 0 else None, "mpp_y": mpp[1] if len(mpp) > 1 else None,
        "mpp_source": slide.get("mpp_source", ""), "colour_correction": slide.get("colour_correction") or "",
        "warnings": " | ".join(str(w) for w in warnings), "vendor": slide.get("vendor", ""),
        "width_mm": size[0] if len(size) > 0 else None, "height_mm": size[1] if len(size) > 1 else None,
        "created": summary.get("created", ""), "worker": str(summary.get("worker") or ""), "folder": name,
    }
    return row


def _empty_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update({c: "" for c in ("slide", "failure_reason", "review", *REVIEW_COLUMNS, "model_sha256", "model_path", "backend",
                                "mpp_source", "colour_correction", "warnings", "vendor", "created", "worker",
                                "folder")})
    row.update(values)
    return row


def _result_folders(out: Path) -> Iterable[Path]:
    from tseg.runtime.cohort.identity import is_result_folder

    for entry in sorted(out.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not _real_folder(entry):  # links to folders are not results here
            continue
        if is_result_folder(entry) or (entry / "summary.json").exists():
            yield entry


def collect_rows(out: str | os.PathLike[str], review_margin: float = REVIEW_MARGIN) -> list[dict[str, Any]]:
    """One row per slide in ``out`` (result folders and recorded failures), sorted by name."""
    from tseg.runtime.outputs.review import review_columns
    from tseg.runtime.outputs.summary import read_summary

    out = Path(out)
    if not 0 <= review_margin < 0.5:
        raise InvalidArgumentError(f"review_margin must be in [0, 0.5), got {review_margin!r}")
    rows: list[dict[str, Any]] = []
    by_slide: dict[str, dict[str, Any]] = {}
    for folder in _result_folders(out):
        try:
            summary = read_summary(folder)
        except OutputError as exc:
            rows.append(_empty_row(name=folder.name, status="unreadable", failure_reason=str(exc), folder=folder.name))
            continue
        if summary is None:
            continue  # a marked folder without a summary: never renamed into place finished
        row = {**row_from_summary(folder.name, summary), **review_columns(folder)}  # the reviewer's verdict
        rows.append(row)
        if row["slide"]:
            by_slide[row["slide"]] = row
    for record in _failures(out):
        done = by_slide.get(record["slide"])
        if done is not None and str(done.get("created") or "") >= str(record.get("failed_at") or ""):
            continue  # finished after it failed (the record of a run that died before forgetting it)
        failed = _empty_row(name=record.get("name") or Path(record["slide"]).name, slide=record["slide"],
                            status="failed", failure_reason=str(record.get("error") or ""),
                            created=record.get("failed_at", ""), worker=str(record.get("worker") or ""),
                            folder=done["folder"] if done is not None else "")
        if done is not None:  # an older result of this slide is still there: failed now
            failed["failure_reason"] += f" (an older result is in {done['folder']}/)"
            rows.remove(done)
        rows.append(failed)
    for row in rows:
        row["review"] = "; ".join(REVIEW_TEXT[f] for f in review_flags(row, review_margin)) if row["status"] == "done" else ""
    rows.sort(key=lambda r: (str(r["name"]).lower(), str(r["slide"])))
    return rows


def cohort_rows(out: Path, rows: list[dict[str, Any]], slides: Sequence[Path],
                shards: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The rows of a given cohort, one per slide in its order (see the module docstring), and
    how many of the folder's rows are for other slides. With ``shards`` (the N of ``run
    --shard K/N``), a slide that did not finish says which shard runs it."""
    from tseg.runtime.cohort.shard import shard_index

    listed: list[dict[str, Any]] = []
    used: set[int] = set()
    for state in locate(slides, out, rows):
        if state.row is not None:
            used.add(state.row)
            row = dict(rows[state.row])
            row["slide"] = row["slide"] or state.slide  # an unreadable result: now known to be this slide's
            if state.reason and row["status"] != "done":  # (a moved slide's reason is not a failure)
                row["failure_reason"] = state.reason
        else:
            row = _empty_row(name=state.name, slide=state.slide, status=state.status, failure_reason=state.reason)
        if shards and row["status"] in UNFINISHED:
            row["failure_reason"] = (f"{row['failure_reason']}; " if row["failure_reason"] else "") + \
                f"shard {shard_index(state.slide, shards)} of {shards}"
        listed.append(row)
    return listed, len(rows) - len(used)


def exit_status(totals: Mapping[str, Any]) -> int:
    """The report command's exit status: 0 when every slide finished, 1 when some failed (or
    their result is unreadable), 3 when none failed but some are running or were not run."""
    if totals["failed"] or totals["unreadable"]:
        return 1
    return 3 if totals.get("running") or totals.get("not_run") else 0


def cohort_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cohort's totals: counts, areas, tiles, compute time, models and settings used."""
    done = [r for r in rows if r["status"] == "done"]

    def total(key: str) -> float:
        return float(sum(_num(r.get(key)) or 0.0 for r in done))

    fractions = sorted(f for f in (_num(r.get("tumour_fraction")) for r in done) if f is not None)
    tissue, tumour = total("tissue_area_mm2"), total("tumour_area_mm2")
    median = None
    if fractions:
        mid = len(fractions) // 2
        median = fractions[mid] if len(fractions) % 2 else (fractions[mid - 1] + fractions[mid]) / 2
    return {
        "slides": len(rows), "done": len(done), "failed": sum(r["status"] == "failed" for r in rows),
        "unreadable": sum(r["status"] == "unreadable" for r in rows),
        "running": sum(r["status"] == RUNNING for r in rows), "not_run": sum(r["status"] == NOT_RUN for r in rows),
        "review": sum(bool(r["review"]) for r in rows),
        "verdicts": sum(bool(r.get("verdict")) and not str(r["verdict"]).endswith("(stale)") for r in rows),
        "tissue_area_mm2": round(tissue, 4), "tumour_area_mm2": round(tumour, 4),
        "tumour_fraction_pooled": round(tumour / tissue, 6) if tissue > 0 else None,
        "tumour_fraction_median": round(median, 6) if median is not None else None,
        "regions": int(total("regions")), "tiles_run": int(total("tiles_run")),
        "tiles_skipped_background": int(total("tiles_skipped_background")),
        "compute_s": round(total("total_s"), 1),
        "models": sorted({r["model_sha256"] for r in done if r["model_sha256"]}),
        "thresholds": sorted({f"{r['low']}/{r['high']}" + ("" if r["prune"] in (True, None) else " no pruning")
                              for r in done}),
    }


# --- thumbnails ---------------------------------------------------------------------------------


def _thumbnail(out: Path, name: str) -> str:
    """Make (or reuse) the thumbnail of ``name``'s overlay; its path relative to ``out``, or ""."""
    import cv2
    import numpy as np

    overlay = out / name / "overlay.png"
    thumb = out / REPORT_DIR / THUMBS_DIR / f"{name}.jpg"
    relative = f"{REPORT_DIR}/{THUMBS_DIR}/{name}.jpg"
    try:
        with open_regular(overlay, below=out) as fh:
            source_mtime = os.fstat(fh.fileno()).st_mtime_ns
            try:
                if check_regular(thumb, follow=False).st_mtime_ns >= source_mtime:
                    return relative
            except OSError:
                pass
            data = fh.read()
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("%s: no thumbnail (%s)", overlay, getattr(exc, "what", exc.strerror or exc))
        return ""
    too_large = overlay_problem(out / name, data)
    if too_large:
        log.warning("%s: no thumbnail (%s)", overlay, too_large)
        return ""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        log.warning("%s: unreadable, no thumbnail", overlay)
        return ""
    h, w = image.shape[:2]
    f = THUMBNAIL_PX / max(h, w)
    if f < 1:
        image = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    if not ok:
        return ""
    atomic_write(thumb, lambda tmp: tmp.write_bytes(buf.tobytes()))
    return relative


def make_thumbnails(out: Path, names: list[str], threads: int = 4) -> dict[str, str]:
    """Thumbnails of the named results (OpenCV releases the GIL: a few threads)."""
    folder = out / REPORT_DIR / THUMBS_DIR
    try:
        ensure_folder(folder, out)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the thumbnail folder: {exc.strerror or exc}") from exc
    wanted = {f"{n}.jpg" for n in names}
    for old in folder.glob("*.jpg"):  # results that are gone
        if old.name not in wanted:
            old.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(lambda n: _thumbnail(out, n), names)))


# --- the two files ------------------------------------------------------------------------------


def _bundled_sha256() -> str | None:
    """The sha256 of the bundled demonstration model (results made with it are flagged)."""
    from tseg.runtime.execution.backends.base import file_sha256
    from tseg.runtime.models import default_model_path

    try:
        return file_sha256(default_model_path())
    except OSError:
        return None


@dataclass
class CohortReport:
    """What :func:`write_report` wrote."""

    csv: Path
    html: Path
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    seconds: float = 0.0
    thumbnails: int = 0
    notes: list[str] = field(default_factory=list)
    outside: int = 0  # results in the folder for slides outside the given cohort (not listed)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_report(out: str | os.PathLike[str], review_margin: float = REVIEW_MARGIN,
                 title: str | None = None, thumbnails: bool = True, cohort: Sequence[Path] | None = None,
                 shards: int | None = None) -> CohortReport:
    """Write ``out/cohort.csv`` and ``out/report.html`` for every slide ``out`` holds, or, given
    the ``cohort``'s slides, for exactly those (see the module docstring; ``shards``: say which
    shard of N runs each slide that did not finish)."""
    from tseg.runtime.cohort.report_page import render_page

    t0 = time.perf_counter()
    out = Path(out)
    if not out.is_dir():
        raise OutputError(out, "no such results folder; give the --out folder of `tseg-rt run`")
    rows = collect_rows(out, review_margin)
    outside = 0
    if cohort is not None:
        rows, outside = cohort_rows(out, rows, cohort, shards)
    totals = cohort_totals(rows)
    totals.update(cohort=cohort is not None, outside=outside)
    names = [r["folder"] for r in rows if r["status"] == "done" and r["folder"]]
    thumbs = make_thumbnails(out, names) if thumbnails and names else {}
    csv_path = write_csv(out / COHORT_CSV, [{c: _csv_value(r.get(c)) for c in COLUMNS} for r in rows], COLUMNS)
    page = render_page(rows, totals, thumbs, title=title or f"tseg-rt cohort report: {out.resolve().name}",
                       generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       review_margin=review_margin, demo_model=_bundled_sha256() in totals["models"])
    html_path = write_text(out / REPORT_HTML, page)
    return CohortReport(csv_path, html_path, rows, totals, time.perf_counter() - t0, sum(bool(v) for v in thumbs.values()),
                        outside=outside)
