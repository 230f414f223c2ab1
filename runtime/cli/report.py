"""``tseg-rt report``: cohort.csv and report.html for a results folder (also the end of ``run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tseg.runtime.cli.common import reported


def report(
    results: Path = typer.Argument(..., help="The --out folder of `tseg-rt run` (of every run and shard)."),
    review_margin: float = typer.Option(0.01, min=0.0, max=0.49,
                                        help="Flag for review tumour fractions within this margin of 0 or 1."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Thumbnails of the overlays."),
    title: Optional[str] = typer.Option(None, help="Title of the page."),
) -> None:
    """Write cohort.csv (one row per slide) and report.html (one static page) for a results folder."""
    from tseg.runtime.cohort.report import write_report

    with reported():
        made = write_report(results, review_margin=review_margin, title=title, thumbnails=thumbnails)
    typer.echo(f"{made.html}\n{made.csv}\n{report_counts(made.totals)}; {made.thumbnails} thumbnail(s), "
               f"{made.seconds:.1f} s")


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
    """``N slide(s): D finished, F failed, R to review first``."""
    failed = totals["failed"] + totals["unreadable"]
    return (f"{totals['slides']} slide(s): {totals['done']} finished, {failed} failed, "
            f"{totals['review']} to review first")
