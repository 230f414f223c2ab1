"""``tseg-rt report``: cohort.csv and report.html for a results folder (also the end of ``run``),
or for a cohort given as ``run`` takes it (``--slides``, ``--csv``): then every slide of it is a
row, ``not run`` or ``running`` without a result (:mod:`tseg.runtime.cohort.coverage`).

Exit status: 0 every slide finished; 1 some failed (or a result is unreadable); 3 none failed,
but some were not run or are still running (with a cohort only); 2 bad options. So a job that
depends on an array job can tell whether to resubmit tasks (``--shards N`` names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from tseg.runtime.cli.common import csv_progress, fail, reported


def report(
    results: Path = typer.Argument(..., help="The --out folder of `tseg-rt run` (of every run and shard)."),
    slides: Optional[List[Path]] = typer.Option(None, "--slides", help="The cohort, as given to `run`: slide files, "
                                                "DICOM series folders or folders (searched the same way); repeat for "
                                                "several. Every slide gets a row, 'not run' or 'running' without a result."),
    csv_table: Optional[Path] = typer.Option(None, "--csv", help="The cohort as a slides CSV (its path column), as given to `run`."),
    shards: Optional[int] = typer.Option(None, "--shards", min=1, help="The N of `run --shard K/N`: name the shard "
                                         "(array task) of every slide that did not finish, to resubmit those tasks."),
    review_margin: float = typer.Option(0.01, min=0.0, max=0.49,
                                        help="Flag for review tumour fractions within this margin of 0 or 1."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Thumbnails of the overlays."),
    title: Optional[str] = typer.Option(None, help="Title of the page."),
) -> None:
    """Write cohort.csv (one row per slide) and report.html (one static page) for a results folder.

    Exit status: 0 every slide finished; 1 some failed (or a result is unreadable); 3 none failed
    but some were not run or are still running (only with --slides or --csv); 2 bad options."""
    from tseg.runtime.cohort.report import UNFINISHED, exit_status, write_report

    if shards is not None and not slides and csv_table is None:
        fail("--shards needs the cohort (--slides or --csv): the folder alone does not know the slides that did not run")
    with reported():
        cohort = None
        if slides or csv_table is not None:
            from tseg.runtime.cohort.slide_lists import collect_slides
            from tseg.runtime.cohort.slides_csv import iter_slides_csv

            from rich.console import Console

            table_rows = (iter_slides_csv(csv_table, progress=csv_progress(Console(stderr=True)))  # streamed, as `run` reads it
                          if csv_table is not None else [])
            cohort = collect_slides(slides or [], table_rows, exclude=results, source=str(csv_table))[0]
        made = write_report(results, review_margin=review_margin, title=title, thumbnails=thumbnails, cohort=cohort,
                            shards=shards)
        typer.echo(f"{made.html}\n{made.csv}\n{report_counts(made.totals)}; {made.thumbnails} thumbnail(s), "
                   f"{made.seconds:.1f} s")
        _say_unfinished([r for r in made.rows if r["status"] in UNFINISHED], shards)
    raise typer.Exit(exit_status(made.totals))


def _say_unfinished(rows: list[dict], shards: Optional[int], most: int = 20) -> None:
    """One line per slide that did not finish (stderr, the first ``most``), and with ``shards``
    the array tasks that would run them again."""
    for r in rows[:most]:
        who, why = str(r["slide"] or r["name"]), str(r["failure_reason"] or "")
        typer.echo(f"{r['status']}: " + (why if why.startswith(who) else f"{who}: {why}" if why else who), err=True)
    if len(rows) > most:
        typer.echo(f"... and {len(rows) - most} more (cohort.csv lists them all)", err=True)
    if shards and rows:
        from tseg.runtime.cohort.shard import shard_index

        tasks = sorted({shard_index(r["slide"], shards) for r in rows if r["slide"]})
        typer.echo(f"to run them again: sbatch --array={','.join(map(str, tasks))} with SHARDS={shards} "
                   "(the same job script and arguments)", err=True)


def write_report_after_run(out: Path, console: Any) -> None:
    """The end-of-batch report; a report that cannot be written is a warning, not a failed batch."""
    from rich.markup import escape

    from tseg.runtime.cohort.report import write_report
    from tseg.runtime.errors import TsegError

    try:
        made = write_report(out)
    except TsegError as exc:
        console.print(f"[yellow]warning:[/] no cohort report: {escape(exc.cli_message())}", highlight=False,
                      soft_wrap=True)
        return
    console.print(escape(f"cohort report: {made.html} and {made.csv.name} ({report_counts(made.totals)})"),
                  highlight=False, soft_wrap=True)


def report_counts(totals: dict) -> str:
    """``N slide(s): D finished, F failed, [X not run, Y running, ]R to review first``."""
    failed = totals["failed"] + totals["unreadable"]
    unfinished = (f"{totals['not_run']} not run, {totals['running']} running, " if totals.get("cohort") else "")
    outside = (f" ({totals['outside']} other result(s) in the folder, not in this cohort, not listed)"
               if totals.get("outside") else "")
    return (f"{totals['slides']} slide(s): {totals['done']} finished, {failed} failed, {unfinished}"
            f"{totals['review']} to review first{outside}"
            + (f"; {totals['verdicts']} with a reviewer's verdict" if totals.get("verdicts") else ""))
