"""The ``tseg-rt`` command line: a thin front end; each command calls one library function.

Heavy modules are imported inside the commands so that ``--help`` is fast and the runtime
commands never import PyTorch. TsegError becomes a one-line message and a non-zero exit status:
1 when some slides failed, 2 for errors that stop the command before any slide runs.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pan-cancer tumour segmentation in H&E whole-slide images.")
train_app = typer.Typer(no_args_is_help=True, help="Training (needs tseg-rt\\[train]).")
app.add_typer(train_app, name="train")

EXIT_FAILED_SLIDES = 1
EXIT_ERROR = 2


def _setup_logging(verbose: int) -> None:
    """Rich log lines on a terminal; plain unwrapped lines in files and pipes (one format for
    this process and its workers, whose records come through the batch's log queue)."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "[%(asctime)s] %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]" if console.is_terminal else "%X",
                        handlers=[handler], force=True)


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    from rich.console import Console

    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a TsegError into its one-line message and exit status 2, and Ctrl-C (SIGTERM) into
    a line that says what stopped and exit status 130 (143)."""
    from tseg.runtime.errors import TsegError
    from tseg.runtime.util.signals import describe_signal, exit_status

    try:
        yield
    except TsegError as exc:
        _fail(exc.cli_message())
    except KeyboardInterrupt as stop:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        _fail(f"{describe_signal(stop)}: `tseg-rt {command}` stopped before it finished; nothing was left "
              "half-written. Run it again to finish.", exit_status(stop))


def _mpp_option(mpp: Optional[str]):  # noqa: ANN202
    if mpp is None:
        return None
    from tseg.runtime.cohort.batch import parse_mpp
    from tseg.runtime.errors import TsegError

    try:
        return parse_mpp(mpp, "--mpp")
    except TsegError as exc:
        _fail(str(exc))
    return None


def _devices(devices: Optional[str]) -> list[int]:
    if not devices:
        return []
    try:
        return [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        _fail(f"--devices takes GPU indices like 0,1,2, got {devices!r}")
    return []


@app.command()
def run(
    slides: Optional[List[Path]] = typer.Argument(None, help="Slide files, DICOM series folders and/or folders (searched recursively)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Output folder (one sub-folder per slide)."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e",
                                          help="Model: .onnx (ONNX Runtime) or .plan (TensorRT). Default: the bundled demonstration model."),
    mpp: Optional[str] = typer.Option(None, help="Level-0 resolution (µm/px), X or X,Y, for every slide; overrides metadata (with a warning when that was plausible)."),
    csv_table: Optional[Path] = typer.Option(None, "--csv", help="Slides CSV: a path column and optional mpp (or mpp_x, mpp_y), low, high, prune per slide."),
    low: Optional[int] = typer.Option(None, min=0, max=255, help="Hysteresis low threshold, 0-255 (default: the model's, 85)."),
    high: Optional[int] = typer.Option(None, min=0, max=255, help="Hysteresis high threshold, 0-255 (default: the model's, 229)."),
    reader_threads: Optional[int] = typer.Option(None, min=1, help="Threads reading slide blocks (default: CPUs, max 4)."),
    level_tolerance: float = typer.Option(0.0, min=0.0, max=50.0, help="Opt-in: read a pyramid level within this "
                                          "many percent of the target resolution and resize it slightly up "
                                          "(e.g. 2 for Aperio 40x slides). Default 0: the paper's rule."),
    dct_scaling: bool = typer.Option(False, "--dct-scaling", help="Opt-in: decode JPEG tiles at 1/2, 1/4 or 1/8 "
                                     "in the DCT domain when that is still at least the target resolution."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo slides that already have results."),
    workers: Optional[int] = typer.Option(None, min=1, help="Slides processed in parallel, each process with its own backend (default 1; with --ray: one per GPU, or one per 4 CPUs)."),
    devices: Optional[str] = typer.Option(None, help="GPU indices for the workers, e.g. 0,1 (one worker per GPU)."),
    providers: str = typer.Option("auto", help="ONNX Runtime providers: auto, cpu, cuda or tensorrt."),
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Segment slides: masks, probability maps, polygons, overlays and a summary per slide."""
    _setup_logging(verbose)
    from rich.console import Console
    from rich.markup import escape

    from tseg.runtime.cohort.batch import BatchInterrupted, read_slides_csv, run_batch
    from tseg.runtime.cohort.members import gather_slides
    from tseg.runtime.method.postprocess import check_thresholds
    from tseg.runtime.cohort.progress import BatchProgress
    from tseg.runtime.execution.segmenter import Segmenter

    console = Console(stderr=True)
    # Every option is checked before any slide or model is read (exit 2).
    device_list = _devices(devices)
    if ray is not None:
        ray = ray.strip()
        if device_list:
            _fail("--devices does not apply with --ray: Ray gives each worker one GPU of the cluster")
        if ray != "auto" and Path(ray).exists() and ":" not in ray:
            _fail(f"--ray takes 'auto' or a cluster address (HOST:6379, ray://HOST:10001), got {ray!r}, which is a "
                  f"file or folder: write --ray auto {ray}")
    if device_list and not workers:
        workers = len(device_list)
    local_workers = workers or 1
    shard_k_n = None
    with _reported():
        if shard is not None:
            from tseg.runtime.cohort.shard import parse_shard

            shard_k_n = parse_shard(shard)
    mpp_value = _mpp_option(mpp)
    if not slides and csv_table is None:
        _fail("give slides, folders or --csv SLIDES.csv")
    with _reported():
        if low is not None or high is not None:
            check_thresholds(low if low is not None else 0, high if high is not None else 255)
        table_rows = read_slides_csv(csv_table) if csv_table is not None else []
        for path, row in table_rows:
            lo = row.get("low", low if low is not None else 85)
            hi = row.get("high", high if high is not None else 229)
            check_thresholds(lo, hi)
    settings = {"low": low, "high": high, "mpp": mpp_value, "reader_threads": reader_threads,
                "level_tolerance": level_tolerance, "dct_scaling": dct_scaling}
    with _reported():
        cohort = gather_slides(slides, table_rows, out)
        found, per_slide = cohort.slides, cohort.per_slide
        if mpp_value is not None and per_slide and any("mpp" in r for r in per_slide.values()):
            console.print("[yellow]warning:[/] the slides CSV's mpp column overrides --mpp for its slides",
                          highlight=False)
        shard_note = ""
        if shard_k_n is not None:
            from tseg.runtime.cohort.shard import select_shard

            everything = len(found)
            found = select_shard(found, *shard_k_n)
            shard_note = f" (shard {shard_k_n[0]}/{shard_k_n[1]}: {len(found)} of {everything})"
        engine_path = str(engine) if engine else None
        if ray is not None:
            from tseg.runtime.cohort.ray_batch import check_model, route_ray_logs

            # Ray's own messages (cluster start, authentication notes) only with -v / -vv.
            route_ray_logs(logging.ERROR if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG)
            segmenter = None
            backend_info = check_model(engine_path, providers, settings)
        else:
            segmenter = Segmenter(engine, providers=providers, device_id=device_list[0] if device_list else 0,
                                  **settings)
            if engine_path is None and local_workers > 1:  # the workers load the same bundled model, quietly
                from tseg.runtime.models import default_model_path

                engine_path = str(default_model_path())
            backend_info = segmenter.backend.describe()
        where = f"Ray {ray}" if ray is not None else ""
        console.print(escape(f"{len(found)} slide(s){shard_note} -> {out}   model: {backend_info['path']} "
                             f"[{backend_info['kind']} {', '.join(backend_info.get('providers', []))}]"
                             + (f"   on {where}" if where else "")),
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
                                     devices=device_list, settings=settings,
                                     on_slide_start=bar.slide_started, on_slide_done=bar.slide_done,
                                     on_tile=bar.tile_done, on_plan=bar.tiles_planned, on_tiles=bar.tiles_done,
                                     slide_settings=per_slide, wait_for_locks=wait_for_locks,
                                     quiet_worker_load=True, ray=ray)
        except BatchInterrupted as stop:
            from tseg.runtime.util.signals import exit_status

            console.print(f"[red]{escape(stop.message())}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(exit_status(stop))
        finally:
            if segmenter is not None:
                segmenter.close()
    with _reported():  # a signal while the report or the table is written: exit 130 / 143 too
        if report:
            _write_report(out, console)
        _report_outcomes(outcomes, console)


def _write_report(out: Path, console) -> None:  # noqa: ANN001
    """The end-of-batch report; a report that cannot be written is a warning, not a failed batch."""
    from rich.markup import escape

    from tseg.runtime.errors import TsegError
    from tseg.runtime.cohort.report import write_report

    try:
        made = write_report(out)
    except TsegError as exc:
        console.print(f"[yellow]warning:[/] no cohort report: {escape(exc.cli_message())}", highlight=False,
                      soft_wrap=True)
        return
    console.print(escape(f"cohort report: {made.html} and {made.csv.name} ({_report_counts(made.totals)})"),
                  highlight=False, soft_wrap=True)


def _report_counts(totals: dict) -> str:
    failed = totals["failed"] + totals["unreadable"]
    unfinished = (f"{totals['not_run']} not run, {totals['running']} running, " if totals.get("cohort") else "")
    outside = (f" ({totals['outside']} other result(s) in the folder, not in this cohort, not listed)"
               if totals.get("outside") else "")
    return (f"{totals['slides']} slide(s): {totals['done']} finished, {failed} failed, {unfinished}"
            f"{totals['review']} to review first{outside}")


@app.command("report")
def report_cmd(
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
        _fail("--shards needs the cohort (--slides or --csv): the folder alone does not know the slides that did not run")
    with _reported():
        cohort = None
        if slides or csv_table is not None:
            from tseg.runtime.cohort.batch import read_slides_csv
            from tseg.runtime.cohort.members import gather_slides

            table_rows = read_slides_csv(csv_table) if csv_table is not None else []
            cohort = gather_slides(slides, table_rows, results).slides
        made = write_report(results, review_margin=review_margin, title=title, thumbnails=thumbnails, cohort=cohort,
                            shards=shards)
        typer.echo(f"{made.html}\n{made.csv}\n{_report_counts(made.totals)}; {made.thumbnails} thumbnail(s), "
                   f"{made.seconds:.1f} s")
        unfinished = [r for r in made.rows if r["status"] in UNFINISHED]
        for r in unfinished[:20]:
            who, why = str(r["slide"] or r["name"]), str(r["failure_reason"] or "")
            typer.echo(f"{r['status']}: " + (why if why.startswith(who) else f"{who}: {why}" if why else who), err=True)
        if len(unfinished) > 20:
            typer.echo(f"... and {len(unfinished) - 20} more (cohort.csv lists them all)", err=True)
        if shards and unfinished:
            from tseg.runtime.cohort.shard import shard_index

            tasks = sorted({shard_index(r["slide"], shards) for r in unfinished if r["slide"]})
            typer.echo(f"to run them again: sbatch --array={','.join(map(str, tasks))} with SHARDS={shards} "
                       "(the same job script and arguments)", err=True)
    raise typer.Exit(exit_status(made.totals))


def _report_outcomes(outcomes: list, console) -> None:  # noqa: ANN001
    """The results table (stdout), then one line per note, warning and failure (stderr)."""
    import shutil as _shutil

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    labels = {"done": "done", "skipped": "skipped", "postprocessed": "post-processed"}
    longest = max((len(o.name) for o in outcomes), default=5)
    table = Table(title="tseg-rt run", show_lines=False)
    table.add_column("slide", overflow="fold", min_width=min(longest, 24))
    for col in ("status", "tiles run/skipped", "tumour mm²", "tissue mm²", "seconds"):
        table.add_column(col, no_wrap=True)
    for o in outcomes:
        tiles = o.summary.get("tiles", {})
        areas = o.summary.get("areas", {})
        table.add_row(escape(o.name), labels.get(o.status, f"[red]{o.status}[/]"),
                      f"{tiles.get('tiles_run', '')}/{tiles.get('tiles_skipped_background', '')}" if tiles else "",
                      f"{areas['tumour_area_mm2']:.2f}" if areas else "",
                      f"{areas['tissue_area_mm2']:.2f}" if areas else "",
                      f"{o.seconds:.1f}" if o.seconds else "")
    stdout = Console()
    if not stdout.is_terminal:  # a log file or a pipe: never cut names at 80 columns
        stdout = Console(width=max(120, _shutil.get_terminal_size((80, 24)).columns, longest + 100))
    stdout.print(table)
    for o in outcomes:
        if o.ok and o.detail and o.detail != "finished with these settings":
            console.print(f"{labels[o.status]}: {escape(o.slide)}: {escape(o.detail)}", highlight=False, soft_wrap=True)
        for w in (o.summary.get("warnings") or []) if o.status in ("done", "postprocessed") else []:
            console.print(f"[yellow]warning:[/] {escape(o.slide)}: {escape(str(w))}", highlight=False, soft_wrap=True)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        text = o.error_cli or o.error or f"{o.slide}: {o.detail}"
        console.print(f"[red]{o.status}:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} slide(s) not processed[/]")
        raise typer.Exit(EXIT_FAILED_SLIDES)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Folder for the demo slide and its results."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="Another model (default: the bundled one)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Generate a synthetic slide, segment it with the bundled model, and report the DSC."""
    _setup_logging(verbose)
    from rich.console import Console

    from tseg.runtime.evaluation.demo import run_demo
    from tseg.runtime.cohort.progress import BatchProgress

    console = Console(stderr=True)
    with _reported():
        with BatchProgress(1, enabled=progress, console=console) as bar:
            bar.slide_started(Path("demo-slide"), "demo-slide")
            result = run_demo(out, str(engine) if engine else None, on_tile=bar.tile_done, on_plan=bar.tiles_planned)
            bar.slide_done(None)
    areas = result.summary["areas"]
    tiles = result.summary["tiles"]
    score = f"{result.dsc:.3f}" if result.dsc is not None else "undefined (no tumour in reference or prediction)"
    typer.echo(f"""
Demo slide : {result.slide}  (generated; known tumour mask {result.reference.name})
Results    : {result.folder}
Tiles      : {tiles['tiles_run']} run, {tiles['tiles_skipped_background']} background tiles skipped
Tumour     : {areas['tumour_area_mm2']:.2f} mm² in {areas['regions']} region(s), of {areas['tissue_area_mm2']:.2f} mm² tissue
DSC        : {score} against the known mask (background excluded)

Look at  {result.folder / 'overlay.png'}  (heatmap and mask outline)
and open {result.folder / 'tumour.geojson'} in QuPath over {result.slide.name} (File > Import objects).
Next: tseg-rt run --engine MODEL.onnx|MODEL.plan SLIDES/ --out results/""")


def _num(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@app.command("eval")
def eval_cmd(
    pred: Path = typer.Option(..., "--pred", help="Results folder of `tseg-rt run`."),
    ref: Path = typer.Option(..., "--ref", help="Folder of references (NAME.geojson/.xml/.mask.png) or a CSV slide,reference."),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Folder for the tables, JSON and plots."),
    cohorts: Optional[Path] = typer.Option(None, "--cohorts", help="CSV with columns slide,cohort."),
    classes: Optional[str] = typer.Option(None, help="GeoJSON classifications that count as tumour (default: all)."),
    sweep: bool = typer.Option(False, "--sweep", help="Sweep the hysteresis thresholds (pruning off) instead."),
    repair_annotations: bool = typer.Option(False, "--repair-annotations"),
) -> None:
    """Evaluate predictions against reference annotations (DSC and the paper's statistics)."""
    from tseg.runtime.evaluation.evaluate import evaluate, sweep as run_sweep

    names = classes.split(",") if classes else None
    with _reported():
        if sweep:
            summary = run_sweep(pred, ref, out, names, repair_annotations)
            best = summary["best"]
            typer.echo(f"{summary['pairs']} threshold pairs on {summary['slides']} slide(s); best: low "
                       f"{best['low_percent']}% ({best['low']}), high {best['high_percent']}% ({best['high']}): "
                       f"mean DSC {_num(best['mean_dsc'], 4)}\n-> {out / 'sweep.csv'}, {out / 'sweep.png'}")
            return
        result = evaluate(pred, ref, out, cohorts, names, repair_annotations)
    for c in result.cohorts:
        ci = f"[{c['ci95_low']:.3f}, {c['ci95_high']:.3f}]" if c["ci95_low"] is not None else f"(n={c['dsc_n']})"
        undefined = f" ({c['dsc_undefined']} with both masks empty left out)" if c["dsc_undefined"] else ""
        typer.echo(f"{c['cohort']}: {c['slides']} slide(s), mean DSC {_num(c['mean_dsc'])} {ci}{undefined}, median "
                   f"{_num(c['median_dsc'])}, no predicted region in {100 * c['no_predicted_region_fraction']:.0f}%; "
                   f"DSC over corresponding regions {_num(c['region_dsc_mean'])} in {c['region_dsc_images']} slide(s), "
                   f"none in {c['images_without_corresponding_regions']}; Spearman rho vs tumour area "
                   f"{_num(c['spearman_reference_area_rho'], 2)} (p {_num(c['spearman_reference_area_p'], 4)}), "
                   f"vs prevalence {_num(c['spearman_prevalence_rho'], 2)} (p {_num(c['spearman_prevalence_p'], 4)})")
    if result.missing:
        typer.echo(f"no reference for: {', '.join(result.missing)}", err=True)
    typer.echo("-> " + ", ".join(str(f) for f in result.files))


@app.command()
def info(
    path: Path = typer.Argument(..., help="A slide, a DICOM series folder, an .onnx model, a .plan engine or a folder of plans."),
    mpp: Optional[str] = typer.Option(None, help="Override the slide's level-0 resolution (µm/px)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a slide (vendor, levels, MPP, size in mm), a model (its contract, and whether
    TensorRT's ONNX parser will take it) or an engine (its manifest)."""
    mpp_value = _mpp_option(mpp)
    if not path.exists():
        _fail(f"{path}: no such file or folder")
    with _reported():
        suffix = path.suffix.lower()
        from tseg.runtime.execution.backends.tensorrt import plans_in

        if suffix in (".plan", ".engine", ".trt"):
            from tseg.engines.manifest import read_manifest

            data = read_manifest(path).to_dict()
        elif path.is_dir() and plans_in(path):  # a folder of plans (one per GPU type)
            from tseg.engines.manifest import read_manifest

            data = {"plans": {p.name: {k: v for k, v in read_manifest(p, verify=False).to_dict().items()
                                       if k in ("tensorrt_version", "gpu", "precision", "plan_sha256", "onnx")}
                              for p in plans_in(path)}}
        elif suffix == ".onnx":
            from tseg.runtime.execution.backends import load_backend

            with load_backend(path, providers="cpu") as backend:
                data = {"model": str(path), "contract": backend.contract.to_dict(),
                        "sha256": backend.sha256}
            try:
                from tseg.engines.conformance import TENSORRT_FLOOR, check_onnx_file

                found = check_onnx_file(path, backend.contract.input_name, backend.contract.output_name)
                data["tensorrt_parser"] = {"floor": TENSORRT_FLOOR, "conforms": not found,
                                           "violations": [str(v) for v in found]}
            except ImportError:  # onnx missing: the check is informative only
                pass
        else:
            from tseg.runtime.wsi.slide import describe_slide

            data = describe_slide(path, mpp_value)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.pretty import Pretty

    Console().print(Pretty(data, expand_all=False))
    if isinstance(data, dict) and data.get("resolution"):
        Console(stderr=True).print(f"[yellow]resolution {escape_text(data['resolution'])}[/] To segment it: "
                                   "tseg-rt run --mpp MICRONS_PER_PIXEL ...", highlight=False, soft_wrap=True)


def escape_text(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def postprocess(
    results: List[Path] = typer.Argument(..., help="Result folders of `tseg-rt run` (OUT/<slide>) or OUT itself."),
    low: int = typer.Option(85, min=0, max=255, help="Hysteresis low threshold (0-255)."),
    high: int = typer.Option(229, min=0, max=255, help="Hysteresis high threshold (0-255); also the pruning threshold."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Prune regions whose 95th percentile <= high."),
) -> None:
    """Redo thresholds from saved probability maps, without the network.

    Every folder is tried; a bad one gets one line on stderr and the exit status 1."""
    from tseg.runtime.errors import TsegError
    from tseg.runtime.outputs.files import SUMMARY, repostprocess
    from tseg.runtime.method.postprocess import check_thresholds
    from tseg.runtime.cohort.resume import is_result_folder

    with _reported():
        check_thresholds(low, high)
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
        typer.echo(f"error: {text}", err=True)
    if not folders:
        raise typer.Exit(EXIT_ERROR)
    failed = len(problems)
    for folder in folders:
        try:
            summary = repostprocess(folder, low, high, prune)
            typer.echo(f"{folder}: tumour {summary['areas']['tumour_area_mm2']:.3f} mm², "
                       f"{summary['areas']['regions']} region(s)")
        except TsegError as exc:
            failed += 1
            typer.echo(f"failed: {exc.cli_message()}", err=True)
    if failed:
        typer.echo(f"{failed} folder(s) not post-processed", err=True)
        raise typer.Exit(EXIT_FAILED_SLIDES)


def _need_torch(extra: str = "train") -> None:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        _fail(f"this command needs PyTorch: pip install 'tseg-rt[{extra}]'")


@train_app.command("prepare")
def train_prepare(
    slides_csv: Path = typer.Argument(..., help="CSV with columns path, annotation, cancer_type, cohort[, mpp]."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (tiles, masks, overviews, tiles.csv)."),
    tile_size: int = typer.Option(2048, help="Tile side at --mpp (paper: 2048)."),
    mpp: float = typer.Option(1.0, help="Resolution of the tiles in µm/px (paper: 1.0)."),
    classes: Optional[str] = typer.Option(None, help="GeoJSON classifications that count as tumour, comma-separated (default: all)."),
    repair_annotations: bool = typer.Option(False, "--repair-annotations", help="Repair invalid polygons instead of failing."),
    reader_threads: Optional[int] = typer.Option(None),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Cut slides and annotations into training tiles and masks (no PyTorch needed)."""
    _setup_logging(verbose)

    from tseg.training.prepare import prepare_dataset

    with _reported():
        report = prepare_dataset(slides_csv, out, tile_size, mpp, classes.split(",") if classes else None,
                                 repair_annotations, reader_threads,
                                 on_slide=lambda s, n: typer.echo(f"{s}: {n} tiles"))
    typer.echo(f"{report.tiles} tiles from {len(report.slides_done)} slide(s) -> {report.index}")
    for slide, error in report.failures.items():
        typer.echo(f"failed: {error}", err=True)
    if report.failures:
        raise typer.Exit(EXIT_FAILED_SLIDES)


@train_app.command("stats")
def train_stats(
    index: Path = typer.Option(..., "--index", help="Tile index CSV from `train prepare`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON here."),
) -> None:
    """Dataset mean and std per channel, as the paper's equations (1) and (2)."""

    from tseg.training.prepare import read_index
    from tseg.training.stats import dataset_stats

    with _reported():
        stats = dataset_stats(r["ImagePath"] for r in read_index(index))
    text = json.dumps(stats, indent=2)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")


@train_app.command("fit")
def train_fit(
    config: str = typer.Option(..., "--config", "-c", help="TOML config or a bundled one (paper, tiny, demo)."),
    index: Path = typer.Option(..., "--index", help="Tile index CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; rerun to resume from its checkpoint."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if present)."),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Train in one process (the config's global batch by gradient accumulation); several GPUs: torchrun -m tseg.training.train."""
    _setup_logging(max(verbose, 1))
    _need_torch()

    from tseg.training.config import load_config
    from tseg.training.train import fit

    with _reported():
        result = fit(load_config(config), index, out, device, resume=resume)
    typer.echo(f"trained to step {result.steps_done}; checkpoint {result.checkpoint}")


@train_app.command("import")
def train_import(
    published: Path = typer.Argument(..., help="The paper's published model.tar."),
    out: Path = typer.Option(..., "--out", "-o", help="tseg checkpoint to write."),
    trust: bool = typer.Option(False, "--trust", help="Allow full unpickling (only for files you trust)."),
) -> None:
    """Convert the published checkpoint into a self-describing tseg checkpoint."""
    _need_torch()

    from tseg.training.importer import import_published

    with _reported():
        report = import_published(published, out, trust=trust)
    typer.echo(f"{out}: {report.by_name} tensors mapped by name, {len(report.by_order)} by order")


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A tseg checkpoint (from `train fit` or `train import`)."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
    precision: str = typer.Option("fp32", help="fp32, or fp16 (mixed precision for TensorRT; the FP32 graph is kept beside it)."),
    traced_size: int = typer.Option(512, help="Tile side used for tracing (a multiple of the divisor)."),
    tile_size: int = typer.Option(7680, help="Inference tile side recorded in the contract (paper: 7680)."),
    min_overlap: int = typer.Option(1024, help="Minimum tile overlap recorded in the contract (paper: 1024)."),
    low: int = typer.Option(85, help="Default hysteresis low threshold recorded in the contract."),
    high: int = typer.Option(229, help="Default hysteresis high threshold recorded in the contract."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    parity: bool = typer.Option(True, "--parity/--no-parity", help="Check the graph against PyTorch (recommended)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Export a checkpoint to an ONNX graph of the whole tile computation, with a parity report."""
    _setup_logging(verbose)
    _need_torch("export")

    from tseg.export.onnx_export import export_checkpoint

    with _reported():
        report = export_checkpoint(checkpoint, out, precision=precision, traced_size=(traced_size, traced_size),
                                   tile_size=tile_size, min_overlap=min_overlap, low=low, high=high,
                                   overwrite=overwrite, check_parity=parity)
    typer.echo(json.dumps({"onnx": str(report.onnx), "parity": report.parity, "graph_fixes": report.fixes,
                           "seconds": round(report.seconds, 1)}, indent=2))


@app.command("build-engine")
def build_engine_cmd(
    onnx_model: Path = typer.Argument(..., help="ONNX from `tseg-rt export` (use --precision fp16 there for FP16)."),
    out: Path = typer.Option(..., "--out", "-o", help="Engine file to write (e.g. model.plan); the manifest goes beside it."),
    min_tile: int = typer.Option(512, help="Smallest tile side the engine accepts."),
    opt_tile: int = typer.Option(7680, help="Tile side TensorRT optimises for (paper: 7680)."),
    max_tile: int = typer.Option(7680, help="Largest tile side (7680: batch 1 only, TensorRT's 2^31 limit)."),
    workspace_gb: float = typer.Option(8.0, help="Builder workspace limit in GiB (lower it if the build runs out of memory)."),
    optimization_level: int = typer.Option(3, min=0, max=5, help="TensorRT builder optimisation level."),
    timing_cache: Optional[Path] = typer.Option(None, help="Persistent timing cache (default ~/.cache/tseg-rt)."),
    device: int = typer.Option(0, help="GPU index to build on."),
    fp16_flag: bool = typer.Option(True, "--fp16-flag/--no-fp16-flag", help="TensorRT 10.x: FP16 builder flag for FP32 graphs."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
) -> None:
    """Build a TensorRT engine for this GPU from an exported ONNX model."""
    _setup_logging(verbose)

    from tseg.engines.build import BuildSettings, build_engine

    settings = BuildSettings(min_tile, opt_tile, max_tile, workspace_gb, optimization_level,
                             str(timing_cache) if timing_cache else None, device, fp16_flag)
    with _reported():
        manifest = build_engine(onnx_model, out, settings, overwrite=overwrite)
    typer.echo(json.dumps(manifest.to_dict(), indent=2))


def main() -> None:
    """Console-script entry point. SIGTERM (scancel, a time limit) stops a command as Ctrl-C
    does, with exit status 143 (:mod:`tseg.runtime.util.signals`)."""
    from tseg.runtime.util.signals import describe_signal, exit_status, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            app()
    except KeyboardInterrupt as stop:
        sys.stderr.write(describe_signal(stop) + "\n")
        sys.exit(exit_status(stop))


if __name__ == "__main__":
    main()
