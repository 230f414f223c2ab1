"""Options shared by the commands that segment slides, each declared once.

Commands subscribe to option groups (as Polygraphy's tools subscribe to its argument groups): a
parameter whose default is an :class:`OptionGroup` is replaced, in the signature typer reads, by
the group's options, and the command receives the object the group makes of them
(:func:`takes_groups`). :data:`SLIDE` is generated from
:class:`~tseg.runtime.cohort.options.SlideOptions`' fields (flag, help, range, default: the
object the service's jobs and request schema use too, so a per-slide option is added there
once); :data:`READING` holds the per-process reading settings, :data:`DICOM` the DICOM outputs.
Single options (``--engine``, ``--devices``...) are types: a parameter of that type gets the
same flag, range and help in every command.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from tseg.runtime.cli.common import fail, mpp_option
from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.wsi.limits import MAX_SLIDE_MM

# --- the model -------------------------------------------------------------------------------
Engine = Annotated[Optional[Path], typer.Option(
    "--engine", "-e",
    help="Model: .onnx (ONNX Runtime) or .plan (TensorRT). Default: the bundled demonstration model.")]
Providers = Annotated[str, typer.Option(help="ONNX Runtime providers: auto, cpu, cuda or tensorrt.")]
Devices = Annotated[Optional[str], typer.Option(help="GPU indices for the workers, e.g. 0,1 (one worker per GPU).")]

ReaderThreads = Annotated[Optional[int], typer.Option(
    min=1, help="Threads reading slide blocks (default: CPUs, max 4).")]

# --- DICOM results and DICOMweb (per run; the site metadata file gives per-slide values) ---------
DicomOut = Annotated[bool, typer.Option(
    "--dicom-out", help="Also write DICOM objects per slide (SEG of tumour and tissue, probability SEG, bulk "
                        "annotations) into RESULT/dicom/.")]
DicomWsi = Annotated[bool, typer.Option(
    "--dicom-wsi", help="With --dicom-out: write non-DICOM slides as DICOM WSI too (wsidicomizer), so that viewers "
                        "and archives have the images.")]
DicomMetadata = Annotated[Optional[Path], typer.Option(
    "--dicom-metadata", metavar="CSV", help="Patient, accession and specimen per non-DICOM slide: a CSV with a path "
                                            "column (see docs/dicom.md).")]
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


# --- option groups -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionGroup:
    """Options several commands take: their parameters, and ``parse(**values)``, which makes one
    object of them (exit 2 naming the problem)."""

    params: tuple[inspect.Parameter, ...]
    parse: Callable[..., Any]

    def without(self, *names: str) -> "OptionGroup":
        """The group less some options (they keep their defaults)."""
        return replace(self, params=tuple(p for p in self.params if p.name not in names))


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def takes_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with each parameter whose default is an :class:`OptionGroup` replaced by the
    group's options; the command receives, under that parameter's name, what the group makes."""
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, OptionGroup] = {}
    for p in signature.parameters.values():
        if isinstance(p.default, OptionGroup):
            groups[p.name] = p.default
            params.extend(p.default.params)
        else:
            params.append(p)

    @functools.wraps(command)
    def subscribed(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group.parse(**{p.name: values.pop(p.name) for p in group.params})
        return command(**values)

    subscribed.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    subscribed.__annotations__ = {p.name: p.annotation for p in params}
    return subscribed


def _slide_params() -> tuple[inspect.Parameter, ...]:
    """One option per :class:`SlideOptions` field that has a ``flag``, typed from its default."""
    params = []
    for f in fields(SlideOptions):
        meta = f.metadata
        if not meta.get("flag"):
            continue
        default = None if f.default is MISSING else f.default
        kind: Any = (bool if isinstance(default, bool) else type(default) if default is not None
                     else Optional[int] if meta.get("min") is not None else Optional[str])
        low, high = ((None if v is None else float(v) if kind is float else v) for v in (meta["min"], meta["max"]))
        option = typer.Option(*meta["flag"].split(" "), help=meta["help"], min=low, max=high, metavar=meta["metavar"])
        params.append(_param(f.name, Annotated[kind, option], default))
    return tuple(params)


def _slide_options(mpp: Optional[str] = None, **values: Any) -> SlideOptions:
    """The per-slide options as one checked :class:`SlideOptions` (exit 2 naming the problem)."""
    from tseg.runtime.errors import TsegError

    try:
        return SlideOptions(mpp=mpp_option(mpp), **values).checked()
    except TsegError as exc:
        fail(exc.cli_message())


def _reading(reader_threads: Optional[int], max_slide_mm: float = MAX_SLIDE_MM) -> dict[str, Any]:
    """The per-process reading settings, as Segmenter keyword arguments."""
    return {"reader_threads": reader_threads, "max_slide_mm": max_slide_mm}


def _dicom(**values: Any) -> Any:
    from tseg.runtime.cli.common import reported

    with reported():
        return dicom_options(**values)


#: The per-slide options (a slides CSV row, a job's options may override them), as a SlideOptions.
SLIDE = OptionGroup(_slide_params(), _slide_options)
#: How this process reads slides: ``{"reader_threads": ..., "max_slide_mm": ...}``.
READING = OptionGroup((_param("reader_threads", ReaderThreads, None), _param("max_slide_mm", MaxSlideMm, MAX_SLIDE_MM)),
                      _reading)
#: DICOM outputs and DICOMweb credentials: a DicomOptions, or None without DICOM outputs.
DICOM = OptionGroup((_param("dicom_out", DicomOut, False), _param("dicom_wsi", DicomWsi, False),
                     _param("dicom_metadata", DicomMetadata, None), _param("stow", Stow, None),
                     _param("stow_stand_in", StowStandIn, False),
                     _param("dicomweb_credentials", DicomwebCredentials, None)), _dicom)


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


def slide_option(name: str) -> Any:
    """The option of one per-slide field, for a command that takes it alone (``info``)."""
    return next(p.annotation for p in SLIDE.params if p.name == name)
