"""``tseg-rt run``: segment slides into result folders, then the cohort report and a table.

A thin shell over :func:`tseg.runtime.cohort.batch.run_batch`: every option is checked before
any slide or model is read (exit 2), slides are listed (folders searched, a slides CSV, a
shard), the model is loaded once here (or checked for the workers), and the outcomes become a
table and an exit status (1 when a slide failed, 130 after Ctrl-C, 143 after SIGTERM).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer

from tseg.runtime.cli.common import EXIT_FAILED_SLIDES, csv_progress, devices_option, fail, reported, setup_logging
from tseg.runtime.util.display import printable
from tseg.runtime.cli.options import (DICOM, READING, SLIDE, Devices, Engine, Progress, Providers, Verbose,
                                      check_stow_sources, takes_groups)
from tseg.runtime.cohort.options import DEFAULT_THRESHOLDS, SlideOptions
from tseg.runtime.cli.report import write_report_after_run


@takes_groups
def run(
    slides: Optional[List[str]] = typer.Argument(None, help="Slide files, DICOM series folders, folders (searched "
                                                 "recursively) and/or DICOMweb series URLs (https://HOST/ROOT/studies/"
                                                 "UID/series/UID)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder (one sub-folder per slide)."),
    engine: Engine = None,
    csv_table: Optional[Path] = typer.Option(None, "--csv", help="Slides CSV: a path column and optional mpp (or mpp_x, mpp_y), low, high, prune per slide."),
    slide: SlideOptions = SLIDE.without("prune"),  # per slide: a slides CSV row may set prune
    reading: dict = READING,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo slides that already have results."),
    workers: Optional[int] = typer.Option(None, min=1, help="Slides processed in parallel, each process with its own backend (default 1; with --ray: one per GPU, or one per 4 CPUs)."),
    devices: Devices = None,
    providers: Providers = "auto",
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|ADDRESS",
                                      help="Run on a Ray cluster (needs tseg-rt\\[ray]): 'auto' joins RAY_ADDRESS or a "
                                           "cluster started here with `ray start`, else starts a local instance; or "
                                           "HOST:6379 / ray://HOST:10001. Slides and --out on storage all nodes see."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N",
                                        help="Run only shard K of N (0 <= K < N; a stable hash of each slide's path): "
                                             "one task of an array job, e.g. $SLURM_ARRAY_TASK_ID/64 (keep N fixed when resubmitting tasks)."),
    report: bool = typer.Option(True, "--report/--no-report",
                                help="Write cohort.csv and report.html for everything in --out at the end."),
    wait_for_locks: bool = typer.Option(True, "--wait-for-locks/--no-wait-for-locks",
                                        help="Wait at the end for slides another process is working on."),
    progress: Progress = True,
    dicom: Any = DICOM,
    verbose: Verbose = 0,
) -> None:
    """Segment slides: masks, probability maps, polygons, overlays and a summary per slide."""
    setup_logging(verbose)
    from rich.console import Console
    from rich.markup import escape

    from tseg.runtime.cohort.outcomes import BatchInterrupted
    from tseg.runtime.cohort.batch import run_batch
    from tseg.runtime.cohort.slide_lists import collect_slides
    from tseg.runtime.cohort.progress import BatchProgress

    console = Console(stderr=True)
    # Every option is checked before any slide or model is read (exit 2).
    device_list = devices_option(devices)
    if ray is not None:
        ray = ray.strip()
        if device_list:
            fail("--devices does not apply with --ray: Ray gives each worker one GPU of the cluster")
        if ray != "auto" and Path(ray).exists() and ":" not in ray:
            fail(f"--ray takes 'auto' or a cluster address (HOST:6379, ray://HOST:10001), got {ray!r}, which is a "
                 f"file or folder: write --ray auto {ray}")
    if device_list and not workers:
        workers = len(device_list)
    local_workers = workers or 1
    shard_k_n = None
    with reported():
        if shard is not None:
            from tseg.runtime.cohort.shard import parse_shard

            shard_k_n = parse_shard(shard)
    settings = {**slide.segmenter_settings(), **reading}
    if not slides and csv_table is None:
        fail("give slides, folders or --csv SLIDES.csv")
    with reported():
        table_rows = _checked_rows(csv_table, slide, console)
    if dicom is not None and ray is not None:
        fail("--dicom-out, --dicom-wsi and --stow do not run on Ray yet: run without --ray (--workers N runs slides "
             "in parallel on this machine)")
    with reported():
        found, per_slide = collect_slides(slides or [], table_rows, exclude=out, source=str(csv_table))
        check_stow_sources(dicom, found)
        check_stow_sources(dicom, found)
        if settings["mpp"] is not None and per_slide and any("mpp" in r for r in per_slide.values()):
            console.print("[yellow]warning:[/] the slides CSV's mpp column overrides --mpp for its slides",
                          highlight=False)
        shard_note = ""
        if shard_k_n is not None:
            from tseg.runtime.cohort.shard import select_shard

            everything = len(found)
            found = select_shard(found, *shard_k_n)
            shard_note = f" (shard {shard_k_n[0]}/{shard_k_n[1]}: {len(found)} of {everything})"
        segmenter, backend_info, engine_path = _load_model(engine, providers, device_list, settings, ray,
                                                           local_workers, verbose)
        where = f"Ray {ray}" if ray is not None else ""
        console.print(escape(printable(f"{len(found)} slide(s){shard_note} -> {out}   model: {backend_info['path']} "
                                       f"[{backend_info['kind']} {', '.join(backend_info.get('providers', []))}]"
                                       + (f"   on {where}" if where else ""))),
                      highlight=False, soft_wrap=True)  # one line in a log file: paths stay whole
        try:
            with BatchProgress(len(found), enabled=progress, console=console,
                               per_slide_tiles=ray is None and local_workers <= 1) as bar:
                if segmenter is not None and local_workers > 1:
                    segmenter.close()
                    segmenter = None
                outcomes = run_batch(found, out, segmenter, overwrite=overwrite,
                                     workers=workers if ray is not None else local_workers,
                                     engine=engine_path, providers=providers,
                                     devices=device_list, settings=settings, events=bar,
                                     slide_settings=per_slide, wait_for_locks=wait_for_locks,
                                     quiet_worker_load=True, ray=ray, dicom=dicom)
        except BatchInterrupted as stop:
            from tseg.runtime.util.signals import exit_status

            console.print(f"[red]{escape(printable(stop.message()))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(exit_status(stop))  # 130 after Ctrl-C, 143 after SIGTERM
        finally:
            if segmenter is not None:
                segmenter.close()
    with reported():  # a signal while the report or the table is written: exit 130 / 143 too
        if report:
            write_report_after_run(out, console)
        print_outcomes(outcomes, console)


def _checked_rows(csv_table: Optional[Path], slide: SlideOptions, console: Any) -> Iterator[Any]:
    """The slides CSV's rows, streamed (:func:`~tseg.runtime.cohort.slides_csv.iter_slides_csv`,
    its progress on ``console``), each row's options checked over the run's (:meth:`SlideOptions.merged`) as it is read."""
    from tseg.runtime.cohort.slides_csv import iter_slides_csv

    if csv_table is None:
        return iter(())

    def rows() -> Iterator[Any]:
        for row in iter_slides_csv(csv_table, progress=csv_progress(console)):
            slide.merged(row.settings, f"{csv_table}, row {row.row}", defaults=DEFAULT_THRESHOLDS)
            yield row

    return rows()


def _load_model(engine: Optional[Path], providers: str, device_list: list[int], settings: dict[str, Any],
                ray: Optional[str], local_workers: int, verbose: int) -> tuple[Any, dict[str, Any], Optional[str]]:
    """``(segmenter or None, what the model line shows, the engine the workers load)``: the model
    loaded here, or, for Ray, checked for the workers (they load it where they run)."""
    engine_path = str(engine) if engine else None
    if ray is not None:
        from tseg.runtime.cohort.ray_worker import check_model
        from tseg.runtime.cohort.ray_cluster import route_ray_logs

        # Ray's own messages (cluster start, authentication notes) only with -v / -vv.
        route_ray_logs(logging.ERROR if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG)
        return None, check_model(engine_path, providers, settings), engine_path
    from tseg.runtime.execution.segmenter import Segmenter

    segmenter = Segmenter(engine, providers=providers, device_id=device_list[0] if device_list else 0, **settings)
    if engine_path is None and local_workers > 1:  # the workers load the same bundled model, quietly
        from tseg.runtime.models import default_model_path

        engine_path = str(default_model_path())
    return segmenter, segmenter.backend.describe(), engine_path


def print_outcomes(outcomes: list, console: Any) -> None:
    """The results table (stdout), then one line per note, warning and failure (stderr); exit 1
    when a slide failed."""
    import shutil

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    labels = {"done": "done", "skipped": "skipped", "postprocessed": "post-processed"}
    longest = max((len(printable(o.name)) for o in outcomes), default=5)
    table = Table(title="tseg-rt run", show_lines=False)
    table.add_column("slide", overflow="fold", min_width=min(longest, 24))
    for col in ("status", "tiles run/skipped", "tumour mm²", "tissue mm²", "seconds"):
        table.add_column(col, no_wrap=True)
    for o in outcomes:
        tiles = o.summary.get("tiles", {})
        areas = o.summary.get("areas", {})
        table.add_row(escape(printable(o.name)), labels.get(o.status, f"[red]{o.status}[/]"),
                      f"{tiles.get('tiles_run', '')}/{tiles.get('tiles_skipped_background', '')}" if tiles else "",
                      f"{areas['tumour_area_mm2']:.2f}" if areas else "",
                      f"{areas['tissue_area_mm2']:.2f}" if areas else "",
                      f"{o.seconds:.1f}" if o.seconds else "")
    stdout = Console()
    if not stdout.is_terminal:  # a log file or a pipe: never cut names at 80 columns
        stdout = Console(width=max(120, shutil.get_terminal_size((80, 24)).columns, longest + 100))
    stdout.print(table)
    for o in outcomes:
        if o.ok and o.detail and o.detail != "finished with these settings":
            console.print(f"{labels[o.status]}: {escape(printable(o.slide))}: {escape(printable(o.detail))}",
                          highlight=False, soft_wrap=True)
        for w in (o.summary.get("warnings") or []) if o.status in ("done", "postprocessed") else []:
            console.print(f"[yellow]warning:[/] {escape(printable(o.slide))}: {escape(printable(str(w)))}",
                          highlight=False, soft_wrap=True)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        text = o.error_cli or o.error or f"{o.slide}: {o.detail}"
        console.print(f"[red]{o.status}:[/] {escape(printable(text))}", highlight=False, soft_wrap=True)
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} slide(s) not processed[/]")
        raise typer.Exit(EXIT_FAILED_SLIDES)
