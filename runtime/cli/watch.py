"""``tseg-rt watch``: the hot folder (parses options, calls :func:`tseg.runtime.service.server.watch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tseg.runtime.cli.common import reported, setup_logging
from tseg.runtime.cohort.options import OVERLAY_OPACITY_DEFAULT, OVERLAY_STYLE_DEFAULT
from tseg.runtime.cli.options import DctScaling, Devices, DicomMetadata, DicomOut, DicomwebCredentials, DicomWsi, Engine, High, LevelTolerance, Low, Mpp, OverlayOpacity, OverlayStyle, Providers, Prune, ReaderThreads, Stow, StowStandIn, Verbose, dicom_options, slide_options
from tseg.runtime.cli.serve import KeepDays, Out, Poll, Report, ReportInterval, Settle, service_config


def watch(
    folder: Annotated[Path, typer.Argument(help="The hot folder: slide files and DICOM series folders that appear "
                                                "in it (at any depth) are segmented once each, when complete.")],
    out: Out = Path("results"),
    engine: Engine = None,
    settle: Settle = 30.0,
    poll: Poll = 2.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try slides that failed before once more.")] = False,
    devices: Devices = None,
    providers: Providers = "auto",
    reader_threads: ReaderThreads = None,
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
    """Watch a folder and segment each slide that appears in it, once, when it is complete."""
    setup_logging(verbose + 1)
    with reported():
        dicom = dicom_options(dicom_out=dicom_out, dicom_wsi=dicom_wsi, dicom_metadata=dicom_metadata, stow=stow,
                              dicomweb_credentials=dicomweb_credentials, stow_stand_in=stow_stand_in)
    options = slide_options(mpp=mpp, low=low, high=high, level_tolerance=level_tolerance, dct_scaling=dct_scaling,
                            prune=prune, overlay_style=overlay_style, overlay_opacity=overlay_opacity,
                            dicom_out=dicom is not None)
    with reported():
        from tseg.runtime.service.core import HotFolderConfig
        from tseg.runtime.service.server import watch as run_watch

        config = service_config(out, engine, devices, providers, reader_threads, options, report, report_interval,
                                keep_days, dicom=dicom, hot_folders=(HotFolderConfig(folder, settle, poll),),
                                retry_failed=retry_failed)
        run_watch(config)
