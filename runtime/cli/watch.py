"""``tseg-rt watch``: the hot folder (parses options, calls :func:`tseg.runtime.service.server.watch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tseg.runtime.cli.common import (DctScalingOption, HighOption, LevelToleranceOption, LowOption, MppOption,
                                     PruneOption, reported, setup_logging, slide_options)
from tseg.runtime.cli.serve import engine_config


def watch(
    folder: Annotated[Path, typer.Argument(help="The hot folder: slide files and DICOM series folders that appear "
                                                "in it (at any depth) are segmented once each, when complete.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (the same layout as `tseg-rt run`).")] = Path("results"),
    engine: Annotated[Optional[Path], typer.Option("--engine", "-e", help="Model: .onnx or .plan (or a folder of plans). "
                                                                          "Default: the bundled demonstration model.")] = None,
    settle: Annotated[float, typer.Option(min=0.0, help="Seconds a slide must stay unchanged (size and time) before it "
                                                        "is taken; on NFS, above the mount's attribute cache time.")] = 30.0,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between scans of the folder.")] = 2.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try slides that failed before once more.")] = False,
    devices: Annotated[Optional[str], typer.Option(help="GPU indices, e.g. 0,1: one worker per GPU.")] = None,
    providers: Annotated[str, typer.Option(help="ONNX Runtime providers: auto, cpu, cuda or tensorrt.")] = "auto",
    reader_threads: Annotated[Optional[int], typer.Option(min=1, help="Threads reading slide blocks per worker.")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Keep cohort.csv and report.html current.")] = True,
    report_interval: Annotated[float, typer.Option(min=0.0, help="Write the report at most this often (seconds), when "
                                                                 "the queue has drained.")] = 30.0,
    keep_days: Annotated[float, typer.Option(help="Forget finished jobs after this many days (0: never).")] = 90.0,
    mpp: MppOption = None,
    low: LowOption = None,
    high: HighOption = None,
    prune: PruneOption = True,
    level_tolerance: LevelToleranceOption = 0.0,
    dct_scaling: DctScalingOption = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Watch a folder and segment each slide that appears in it, once, when it is complete."""
    setup_logging(verbose + 1)
    options = slide_options(mpp, low, high, prune, level_tolerance, dct_scaling)
    with reported():
        from tseg.runtime.service.core import HotFolderConfig
        from tseg.runtime.service.server import watch as run_watch

        config = engine_config(out, engine, devices, providers, reader_threads, options, report, keep_days,
                               report_interval_s=report_interval, hot_folders=(HotFolderConfig(folder, settle, poll),),
                               retry_failed=retry_failed)
        run_watch(config)
