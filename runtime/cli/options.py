"""Options shared by the commands that segment slides, declared once.

``run`` takes them, and so do ``serve`` and ``watch``: give a parameter one of these types and it
gets the same flag, default, range and help. The per-slide ones become one
:class:`~tseg.runtime.cohort.options.SlideOptions` (:func:`slide_options`: the object the service's
jobs and request schema use too, so a per-slide option is added there once), and
:func:`slide_settings` turns that into the keyword arguments of
:class:`~tseg.runtime.execution.segmenter.Segmenter` (and of ``run_batch(settings=...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer

from tseg.runtime.cli.common import fail, mpp_option
from tseg.runtime.cohort.options import OVERLAY_OPACITY_DEFAULT, OVERLAY_STYLE_DEFAULT, SlideOptions

# --- the model -------------------------------------------------------------------------------
Engine = Annotated[Optional[Path], typer.Option(
    "--engine", "-e",
    help="Model: .onnx (ONNX Runtime) or .plan (TensorRT). Default: the bundled demonstration model.")]
Providers = Annotated[str, typer.Option(help="ONNX Runtime providers: auto, cpu, cuda or tensorrt.")]
Devices = Annotated[Optional[str], typer.Option(help="GPU indices for the workers, e.g. 0,1 (one worker per GPU).")]

# --- per-slide settings (a slides CSV row may override mpp, low, high and prune) ----------------
Mpp = Annotated[Optional[str], typer.Option(
    help="Level-0 resolution (µm/px), X or X,Y, for every slide; overrides metadata (with a warning when "
         "that was plausible).")]
Low = Annotated[Optional[int], typer.Option(
    min=0, max=255, help="Hysteresis low threshold, 0-255 (default: the model's, 85).")]
High = Annotated[Optional[int], typer.Option(
    min=0, max=255, help="Hysteresis high threshold, 0-255 (default: the model's, 229).")]
ReaderThreads = Annotated[Optional[int], typer.Option(
    min=1, help="Threads reading slide blocks (default: CPUs, max 4).")]
LevelTolerance = Annotated[float, typer.Option(
    min=0.0, max=50.0, help="Opt-in: read a pyramid level within this many percent of the target resolution and "
                            "resize it slightly up (e.g. 2 for Aperio 40x slides). Default 0: the paper's rule.")]
DctScaling = Annotated[bool, typer.Option(
    "--dct-scaling", help="Opt-in: decode JPEG tiles at 1/2, 1/4 or 1/8 in the DCT domain when that is still at "
                          "least the target resolution.")]
Prune = Annotated[bool, typer.Option(
    "--prune/--no-prune", help="Keep a region only if the 95th percentile of its smoothed probability exceeds the "
                               "high threshold (the paper's pruning).")]

# --- the overlay (overlay.png only: never the maps, the mask or the polygons) --------------------
OverlayStyle = Annotated[str, typer.Option(
    "--overlay-style", metavar="fill|contour|heatmap",
    help="overlay.png: the tumour mask as a translucent fill with its contour, the contour alone, or the "
         "probability as a colour-blind-safe heat map with the contour.")]
OverlayOpacity = Annotated[float, typer.Option(
    "--overlay-opacity", min=0.0, max=1.0,
    help="Opacity of the overlay's fill or heat map, 0-1 (the tissue stays visible below it).")]
#: Their defaults (OVERLAY_STYLE_DEFAULT, OVERLAY_OPACITY_DEFAULT, imported above) are SlideOptions',
#: tested against DEFAULT_OVERLAY_* of execution.segmenter, which is not imported here so that
#: --help stays fast.

# --- DICOM results and DICOMweb (per run; the site metadata file gives per-slide values) ---------
DicomOut = Annotated[bool, typer.Option(
    "--dicom-out", help="Also write DICOM objects per slide (SEG of tumour and tissue, probability SEG, bulk "
                        "annotations) into RESULT/dicom/.")]
DicomWsi = Annotated[bool, typer.Option(
    "--dicom-wsi", help="With --dicom-out: write non-DICOM slides as DICOM WSI too (wsidicomizer), so that viewers "
                        "and archives have the images.")]
DicomMetadata = Annotated[Optional[Path], typer.Option(
    "--dicom-metadata", metavar="CSV", help="Patient, accession and specimen per non-DICOM slide: a CSV with a path "
                                            "column (see the README).")]
Stow = Annotated[Optional[str], typer.Option(
    "--stow", metavar="URL", help="Store the DICOM objects on a DICOMweb server (STOW-RS), e.g. "
                                  "https://pacs/dicom-web; implies --dicom-out.")]
StowStandIn = Annotated[bool, typer.Option(
    "--stow-stand-in", help="With --stow: store the results of non-DICOM slides even without --dicom-wsi or "
                            "--dicom-metadata, referring to a slide the archive does not have, with empty patient "
                            "attributes (refused otherwise).")]
DicomwebCredentials = Annotated[Optional[Path], typer.Option(
    "--dicomweb-credentials", metavar="FILE", help="JSON file with DICOMweb credentials (a token, or a username and "
                                                   "password, per server); or the TSEG_DICOMWEB_* variables.")]

MaxSlideMm = Annotated[float, typer.Option(
    "--max-slide-mm", min=1.0, help="Refuse, before reading pixels, slides whose metadata claims a side longer than "
                                    "this many mm (glass slides are 75 x 25 mm; a larger claim is usually broken "
                                    "metadata).")]

# --- how a command reports -------------------------------------------------------------------
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True)]

def slide_options(*, mpp: Optional[str], low: Optional[int], high: Optional[int], level_tolerance: float,
                  dct_scaling: bool, prune: bool = True, overlay_style: str = OVERLAY_STYLE_DEFAULT,
                  overlay_opacity: float = OVERLAY_OPACITY_DEFAULT, dicom_out: bool = False) -> SlideOptions:
    """The per-slide options as one checked :class:`SlideOptions` (exit 2 naming the problem)."""
    from tseg.runtime.errors import TsegError

    try:
        return SlideOptions(mpp=mpp_option(mpp), low=low, high=high, prune=prune, level_tolerance=level_tolerance,
                            dct_scaling=dct_scaling, overlay_style=overlay_style,  # type: ignore[arg-type]
                            overlay_opacity=overlay_opacity, dicom_out=dicom_out).checked()
    except TsegError as exc:
        fail(exc.cli_message())


def slide_settings(*, mpp: Optional[str], low: Optional[int], high: Optional[int],
                   reader_threads: Optional[int], level_tolerance: float, dct_scaling: bool,
                   overlay_style: str = OVERLAY_STYLE_DEFAULT, overlay_opacity: float = OVERLAY_OPACITY_DEFAULT,
                   max_slide_mm: float = 100.0) -> dict[str, Any]:
    """The per-slide options as Segmenter keyword arguments, ``--mpp`` parsed and every option
    checked (exit 2 naming the problem), plus the per-process ``reader_threads`` and ``max_slide_mm``.
    Thresholds are checked against the model's defaults by the caller, which may also have per-slide ones (a slides
    CSV) to check with them."""
    options = slide_options(mpp=mpp, low=low, high=high, level_tolerance=level_tolerance, dct_scaling=dct_scaling,
                            overlay_style=overlay_style, overlay_opacity=overlay_opacity)
    return {**options.segmenter_settings(), "reader_threads": reader_threads, "max_slide_mm": max_slide_mm}


def dicom_options(*, dicom_out: bool, dicom_wsi: bool, dicom_metadata: Optional[Path], stow: Optional[str],
                  dicomweb_credentials: Optional[Path], stow_stand_in: bool = False) -> Any:
    """The run's :class:`~tseg.runtime.outputs.dicom_export.DicomOptions` (None without DICOM
    outputs), every problem raised as a TsegError before any slide is read. A credentials file is
    checked and named to this process and its workers by ``TSEG_DICOMWEB_CREDENTIALS`` (its path,
    never its content), for reading DICOMweb slides and for storing."""
    import os

    if dicomweb_credentials is not None:
        from tseg.runtime.util.http import CREDENTIALS_ENV, check_credentials_file

        check_credentials_file(dicomweb_credentials)
        os.environ[CREDENTIALS_ENV] = str(dicomweb_credentials.resolve())
    if not (dicom_out or dicom_wsi or stow or dicom_metadata):
        return None
    from tseg.runtime.outputs.dicom_export import make_options

    if stow_stand_in and not stow:
        from tseg.runtime.errors import InvalidArgumentError

        raise InvalidArgumentError("--stow-stand-in applies only with --stow URL")
    return make_options(convert_slide=dicom_wsi, stow_url=stow, metadata_file=dicom_metadata,
                        credentials_file=str(dicomweb_credentials.resolve()) if dicomweb_credentials else None,
                        stow_stand_in=stow_stand_in)


def check_stow_sources(dicom: Any, slides: Sequence[Any]) -> None:
    """Refuse (exit 2) ``--stow`` of non-DICOM slides whose objects would refer to a stand-in of
    the slide, with empty patient attributes (issue 29): the two ways to fix it, and the option
    that says so."""
    if dicom is None or not dicom.stow_url or dicom.convert_slide or dicom.site or dicom.stow_stand_in:
        return
    from tseg.runtime.wsi.dicom_source import is_dicom_slide_path
    from tseg.runtime.wsi.locator import is_remote

    plain = [str(s) for s in slides if not is_remote(s) and not is_dicom_slide_path(Path(s))]
    if plain:
        fail(f"--stow would store the results of {len(plain)} non-DICOM slide(s) ({', '.join(plain[:3])}"
             f"{', ...' if len(plain) > 3 else ''}) referring to a slide the archive does not have, with empty "
             "patient attributes. Add --dicom-wsi (store each slide as DICOM with its results) or --dicom-metadata "
             "CSV (each slide's patient, accession and specimen); or --stow-stand-in to store them as they are "
             "(docs/dicom.md)")
