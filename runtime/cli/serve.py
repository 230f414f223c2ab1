"""``tseg-rt serve``: the local HTTP service (parses options, calls :func:`tseg.runtime.service.server.serve`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from tseg.runtime.cli.common import devices_option, reported, setup_logging
from tseg.runtime.cohort.options import OVERLAY_OPACITY_DEFAULT, OVERLAY_STYLE_DEFAULT
from tseg.runtime.cli.options import DctScaling, Devices, DicomMetadata, DicomOut, DicomwebCredentials, DicomWsi, Engine, High, LevelTolerance, Low, Mpp, OverlayOpacity, OverlayStyle, Providers, Prune, ReaderThreads, Stow, StowStandIn, Verbose, dicom_options, slide_options

Out = Annotated[Path, typer.Option("--out", "-o", help="Results folder (the layout of `tseg-rt run`; the job queue "
                                                       "is kept in OUT/.tseg-service/).")]
Settle = Annotated[float, typer.Option(min=0.0, help="Hot folder: seconds a slide must stay unchanged (size and time) "
                                                     "before it is taken; on NFS, above the mount's attribute cache "
                                                     "time.")]
Poll = Annotated[float, typer.Option(min=0.1, help="Hot folder: seconds between scans.")]
Report = Annotated[bool, typer.Option("--report/--no-report", help="Keep cohort.csv and report.html current.")]
ReportInterval = Annotated[float, typer.Option(min=0.0, help="Write the report at most this often (seconds), when the "
                                                             "queue has drained.")]
KeepDays = Annotated[float, typer.Option(help="Forget finished jobs after this many days (0: never); their results "
                                              "stay.")]


def service_config(out: Path, engine: Optional[Path], devices: Optional[str], providers: str,
                   reader_threads: Optional[int], options: Any, report: bool, report_interval: float,
                   keep_days: float, **more: Any) -> Any:
    """The :class:`~tseg.runtime.service.core.ServiceConfig` both service commands build."""
    from tseg.runtime.service.core import ServiceConfig

    return ServiceConfig(out=out, engine=str(engine) if engine else None, providers=providers,
                         devices=tuple(devices_option(devices)), reader_threads=reader_threads, defaults=options,
                         report=report, report_interval_s=report_interval,
                         keep_days=keep_days if keep_days > 0 else None, **more)


def serve(
    out: Out = Path("results"),
    root: Annotated[Optional[List[Path]], typer.Option("--root", help="A folder slides may be read from (repeat for "
                                                                      "several). Paths outside every root are refused.")] = None,
    engine: Engine = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port; the one taken is in "
                                                             "OUT/.tseg-service/service.json).")] = 8642,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="File whose first line is the token every "
                                                                            "request must send as 'Authorization: Bearer TOKEN'.")] = None,
    devices: Devices = None,
    providers: Providers = "auto",
    reader_threads: ReaderThreads = None,
    watch: Annotated[Optional[List[Path]], typer.Option("--watch", help="Also process slides that appear in this folder "
                                                                        "(a hot folder, as `tseg-rt watch`).")] = None,
    settle: Settle = 30.0,
    poll: Poll = 2.0,
    report: Report = True,
    report_interval: ReportInterval = 30.0,
    keep_days: KeepDays = 90.0,
    mpp: Mpp = None,
    low: Low = None,
    high: High = None,
    prune: Prune = True,
    level_tolerance: LevelTolerance = 0.0,
    dct_scaling: DctScaling = False,
    overlay_style: OverlayStyle = OVERLAY_STYLE_DEFAULT,
    overlay_opacity: OverlayOpacity = OVERLAY_OPACITY_DEFAULT,
    dicom_out: DicomOut = False,
    dicom_wsi: DicomWsi = False,
    dicom_metadata: DicomMetadata = None,
    stow: Stow = None,
    stow_stand_in: StowStandIn = False,
    dicomweb_credentials: DicomwebCredentials = None,
    verbose: Verbose = 0,
) -> None:
    """Serve a local HTTP API: submit slides by path, follow jobs, fetch results (see README)."""
    setup_logging(verbose + 1)  # a service logs what it does (INFO); -v adds every request, -vv debug
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if verbose >= 1 else logging.WARNING)
    with reported():
        dicom = dicom_options(dicom_out=dicom_out, dicom_wsi=dicom_wsi, dicom_metadata=dicom_metadata, stow=stow,
                              dicomweb_credentials=dicomweb_credentials, stow_stand_in=stow_stand_in)
    options = slide_options(mpp=mpp, low=low, high=high, level_tolerance=level_tolerance, dct_scaling=dct_scaling,
                            prune=prune, overlay_style=overlay_style, overlay_opacity=overlay_opacity,
                            dicom_out=dicom is not None)
    with reported():
        from tseg.runtime.service.access import read_token_file
        from tseg.runtime.service.core import HotFolderConfig
        from tseg.runtime.service.server import serve as run_service

        token = read_token_file(token_file) if token_file is not None else None
        config = service_config(out, engine, devices, providers, reader_threads, options, report, report_interval,
                                keep_days, dicom=dicom, roots=tuple(root or ()),
                                hot_folders=tuple(HotFolderConfig(w, settle, poll) for w in watch or ()))
        run_service(config, host=host, port=port, token=token)
