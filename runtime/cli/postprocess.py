"""``tseg-rt postprocess``: other thresholds or overlays from saved probability maps, without the network."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tseg.runtime.cli.common import EXIT_ERROR, EXIT_FAILED_SLIDES, reported
from tseg.runtime.util.display import printable


def postprocess(
    results: List[Path] = typer.Argument(..., help="Result folders of `tseg-rt run` (OUT/<slide>) or OUT itself."),
    low: Optional[int] = typer.Option(None, min=0, max=255,
                                      help="Hysteresis low threshold (0-255; default: each result's own)."),
    high: Optional[int] = typer.Option(None, min=0, max=255, help="Hysteresis high threshold (0-255; default: each "
                                                                  "result's own); also the pruning threshold."),
    prune: Optional[bool] = typer.Option(None, "--prune/--no-prune", help="Prune regions whose 95th percentile <= "
                                                                         "high (default: as each result was)."),
    overlay_style: Optional[str] = typer.Option(None, "--overlay-style", metavar="fill|contour|heatmap",
                                                help="Redraw overlay.png in this style (default: each result's own)."),
    overlay_opacity: Optional[float] = typer.Option(None, "--overlay-opacity", min=0.0, max=1.0,
                                                    help="Opacity of the fill or heat map, 0-1 (default: each "
                                                         "result's own)."),
) -> None:
    """Redo thresholds from saved probability maps, without the network, and redraw the overlays.

    What is not given stays as each result was made. Every folder is tried; a bad one gets one
    line on stderr and the exit status 1."""
    from tseg.runtime.errors import TsegError
    from tseg.runtime.execution.segmenter import DEFAULT_OVERLAY_OPACITY, DEFAULT_OVERLAY_STYLE, check_overlay
    from tseg.runtime.outputs.summary import SUMMARY
    from tseg.runtime.outputs.files import repostprocess
    from tseg.runtime.method.postprocess import check_thresholds
    from tseg.runtime.cohort.identity import is_result_folder

    with reported():
        check_thresholds(low if low is not None else 0, high if high is not None else 255)
        check_overlay(overlay_style if overlay_style is not None else DEFAULT_OVERLAY_STYLE,
                      overlay_opacity if overlay_opacity is not None else DEFAULT_OVERLAY_OPACITY)
    folders: list[Path] = []
    problems: list[str] = []
    for r in results:
        if not r.exists():
            problems.append(f"{r}: no such file or folder")
        elif (r / SUMMARY).exists() or is_result_folder(r):
            folders.append(r)
        elif r.is_dir():
            inside = sorted(p for p in r.iterdir() if p.is_dir() and not p.name.startswith(".")
                            and ((p / SUMMARY).exists() or is_result_folder(p)))
            if not inside:
                problems.append(f"{r}: no tseg-rt result folders (with {SUMMARY}) in it")
            folders.extend(inside)
        else:
            problems.append(f"{r}: not a result folder of `tseg-rt run`")
    for text in problems:
        typer.echo(f"error: {printable(text)}", err=True)
    if not folders:
        raise typer.Exit(EXIT_ERROR)
    failed = len(problems)
    for folder in folders:
        try:
            summary = repostprocess(folder, low, high, prune, overlay_style=overlay_style,
                                    overlay_opacity=overlay_opacity)
            typer.echo(f"{printable(str(folder))}: tumour {summary['areas']['tumour_area_mm2']:.3f} mm², "
                       f"{summary['areas']['regions']} region(s)")
        except TsegError as exc:
            failed += 1
            typer.echo(f"failed: {printable(exc.cli_message())}", err=True)
    if failed:
        typer.echo(f"{failed} folder(s) not post-processed", err=True)
        raise typer.Exit(EXIT_FAILED_SLIDES)
