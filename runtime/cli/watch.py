"""``tseg-rt watch``: the hot folder (parses options, calls :func:`tseg.runtime.service.server.watch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tseg.runtime.cli.common import reported, setup_logging
from tseg.runtime.cli.options import DICOM, READING, SLIDE, Verbose, takes_groups
from tseg.runtime.cli.serve import SERVICE, service_config
from tseg.runtime.cohort.options import SlideOptions


@takes_groups
def watch(
    folder: Annotated[Path, typer.Argument(help="The hot folder: slide files and DICOM series folders that appear "
                                                "in it (at any depth) are segmented once each, when complete.")],
    service: dict = SERVICE,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try slides that failed before once more.")] = False,
    reading: dict = READING,
    slide: SlideOptions = SLIDE,
    dicom: Any = DICOM,
    verbose: Verbose = 0,
) -> None:
    """Watch a folder and segment each slide that appears in it, once, when it is complete."""
    setup_logging(verbose + 1)
    with reported():
        from tseg.runtime.service.server import watch as run_watch

        run_watch(service_config(service, reading, slide, dicom, [folder], retry_failed=retry_failed))
