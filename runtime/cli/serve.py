"""``tseg-rt serve``: the local HTTP service (parses options, calls :func:`tseg.runtime.service.server.serve`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tseg.runtime.cli.common import (DctScalingOption, HighOption, LevelToleranceOption, LowOption, MppOption,
                                     PruneOption, parse_devices, reported, setup_logging, slide_options)


def engine_config(out: Path, engine: Optional[Path], devices: Optional[str], providers: str,
                  reader_threads: Optional[int], options, report: bool, keep_days: float, **more):  # noqa: ANN001,ANN201
    """The ServiceConfig both service commands build."""
    from tseg.runtime.service.core import ServiceConfig

    return ServiceConfig(out=out, engine=str(engine) if engine else None, providers=providers,
                         devices=tuple(parse_devices(devices)), reader_threads=reader_threads, defaults=options,
                         report=report, keep_days=keep_days if keep_days > 0 else None, **more)


def quiet_access_log(verbose: int) -> None:
    """One line per HTTP request only with -v (status polls would fill the journal)."""
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if verbose >= 1 else logging.WARNING)


def serve(
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder (the same layout as `tseg-rt run`; the job "
                                                          "queue is kept in OUT/.tseg-service/).")] = Path("results"),
    root: Annotated[Optional[List[Path]], typer.Option("--root", help="A folder slides may be read from (repeat for "
                                                                      "several). Paths outside every root are refused.")] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", "-e", help="Model: .onnx or .plan (or a folder of plans). "
                                                                          "Default: the bundled demonstration model.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port; the one taken is in "
                                                             "OUT/.tseg-service/service.json).")] = 8642,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="File whose first line is the token every "
                                                                            "request must send as 'Authorization: Bearer TOKEN'.")] = None,
    devices: Annotated[Optional[str], typer.Option(help="GPU indices, e.g. 0,1: one worker (engine loaded once) per GPU.")] = None,
    providers: Annotated[str, typer.Option(help="ONNX Runtime providers: auto, cpu, cuda or tensorrt.")] = "auto",
    reader_threads: Annotated[Optional[int], typer.Option(min=1, help="Threads reading slide blocks per worker.")] = None,
    watch: Annotated[Optional[List[Path]], typer.Option("--watch", help="Also process slides that appear in this folder "
                                                                        "(a hot folder, as `tseg-rt watch`).")] = None,
    settle: Annotated[float, typer.Option(min=0.0, help="Hot folder: seconds a slide must stay unchanged before it is "
                                                        "taken (on NFS, above the mount's attribute cache time).")] = 30.0,
    poll: Annotated[float, typer.Option(min=0.1, help="Hot folder: seconds between scans.")] = 2.0,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Keep cohort.csv and report.html current.")] = True,
    report_interval: Annotated[float, typer.Option(min=0.0, help="Write the report at most this often (seconds), when "
                                                                 "the queue has drained.")] = 30.0,
    keep_days: Annotated[float, typer.Option(help="Forget finished jobs after this many days (0: never); results "
                                                  "stay.")] = 90.0,
    mpp: MppOption = None,
    low: LowOption = None,
    high: HighOption = None,
    prune: PruneOption = True,
    level_tolerance: LevelToleranceOption = 0.0,
    dct_scaling: DctScalingOption = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v: every request; -vv: debug.")] = 0,
) -> None:
    """Serve a local HTTP API: submit slides by path, follow jobs, fetch results (see README)."""
    setup_logging(verbose + 1)
    quiet_access_log(verbose)
    options = slide_options(mpp, low, high, prune, level_tolerance, dct_scaling)
    with reported():
        from tseg.runtime.service.access import read_token_file
        from tseg.runtime.service.core import HotFolderConfig
        from tseg.runtime.service.server import serve as run_service

        token = read_token_file(token_file) if token_file is not None else None
        config = engine_config(out, engine, devices, providers, reader_threads, options, report, keep_days,
                               report_interval_s=report_interval, roots=tuple(root or ()),
                               hot_folders=tuple(HotFolderConfig(w, settle, poll) for w in watch or ()))
        run_service(config, host=host, port=port, token=token)
