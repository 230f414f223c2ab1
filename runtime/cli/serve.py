"""``tseg-rt serve``: the local HTTP service (parses options, calls :func:`tseg.runtime.service.server.serve`)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from dataclasses import replace
from typing import Annotated, Any, List, Optional, Sequence

import typer

from tseg.runtime.cli.common import devices_option, reported, setup_logging
from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.cli.options import DICOM, READING, SLIDE, Devices, Engine, OptionGroup, Providers, Verbose, takes_groups

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


def _service(out: Out = Path("results"), engine: Engine = None, devices: Devices = None, providers: Providers = "auto",
             settle: Settle = 30.0, poll: Poll = 2.0, report: Report = True, report_interval: ReportInterval = 30.0,
             keep_days: KeepDays = 90.0) -> dict[str, Any]:
    """The options both service commands take, as :class:`~tseg.runtime.service.core.ServiceConfig` keywords
    (``settle`` and ``poll`` apply to each hot folder: :func:`service_config` takes them out)."""
    return {"out": out, "engine": str(engine) if engine else None, "providers": providers,
            "devices": tuple(devices_option(devices)), "settle": settle, "poll": poll, "report": report,
            "report_interval_s": report_interval, "keep_days": keep_days if keep_days > 0 else None}


#: The options of ``serve`` and ``watch`` that are not per slide (generated from :func:`_service`'s parameters).
SERVICE = OptionGroup(tuple(inspect.signature(_service, eval_str=True).parameters.values()), _service)


def service_config(service: dict[str, Any], reading: dict[str, Any], slide: SlideOptions, dicom: Any,
                   watch: Sequence[Path] = (), **more: Any) -> Any:
    """The :class:`~tseg.runtime.service.core.ServiceConfig` both service commands build; a job's
    options default to ``slide`` (DICOM outputs on where the service makes them)."""
    from tseg.runtime.service.core import HotFolderConfig, ServiceConfig

    settings = dict(service)
    settle, poll = settings.pop("settle"), settings.pop("poll")
    hot = tuple(HotFolderConfig(folder, settle, poll) for folder in watch)
    return ServiceConfig(**settings, **reading, defaults=replace(slide, dicom_out=dicom is not None), dicom=dicom,
                         hot_folders=hot, **more)


@takes_groups
def serve(
    service: dict = SERVICE,
    root: Annotated[Optional[List[Path]], typer.Option("--root", help="A folder slides may be read from (repeat for "
                                                                      "several). Paths outside every root are refused.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port; the one taken is in "
                                                             "OUT/.tseg-service/service.json).")] = 8642,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="File whose first line is the token every "
                                                                            "request must send as 'Authorization: Bearer TOKEN'.")] = None,
    watch: Annotated[Optional[List[Path]], typer.Option("--watch", help="Also process slides that appear in this folder "
                                                                        "(a hot folder, as `tseg-rt watch`).")] = None,
    max_queued: Annotated[int, typer.Option("--max-queued", min=0, help=(
        "Refuse new submissions (429, Retry-After) while this many jobs are pending (0: no limit); an equal "
        "pending job is still returned, and hot-folder slides are always taken."))] = 1000,
    reading: dict = READING,
    slide: SlideOptions = SLIDE,
    dicom: Any = DICOM,
    verbose: Verbose = 0,
) -> None:
    """Serve a local HTTP API: submit slides by path, follow jobs, fetch results (docs/service.md)."""
    setup_logging(verbose + 1)  # a service logs what it does (INFO); -v adds every request, -vv debug
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if verbose >= 1 else logging.WARNING)
    with reported():
        from tseg.runtime.service.access import read_token_file
        from tseg.runtime.service.server import serve as run_service

        token = read_token_file(token_file) if token_file is not None else None
        config = service_config(service, reading, slide, dicom, watch or (), roots=tuple(root or ()),
                                max_queued=max_queued or None)
        run_service(config, host=host, port=port, token=token)
