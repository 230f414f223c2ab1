"""Which kind of source reads a path: a DICOMweb series (a URL), a DICOM series, OME-TIFF,
OpenSlide (with TIFF-family tiles decoded directly), then tifffile for TIFFs OpenSlide refuses."""

from __future__ import annotations

import re
from pathlib import Path

from tseg.runtime.errors import (NotRegularFileError, SlideNotFoundError, TsegError, UnsupportedPixelsError,
                                 UnsupportedSlideError)
from tseg.runtime.util.safeio import UnsafeFileError, check_regular, open_regular
from tseg.runtime.wsi import dicom_source as dicom
from tseg.runtime.wsi.dicomweb_source import is_dicomweb_url
from tseg.runtime.wsi.mpp import plausible_mpp
from tseg.runtime.wsi.openslide_source import OpenSlideSource
from tseg.runtime.wsi.base import SlideSource
from tseg.runtime.wsi.tiff_decode import DamagedTiffError
from tseg.runtime.wsi.tifffile_source import DirectTiffSource, TiffFileSource, is_ome_tiff

#: ``decoder=`` choices of :func:`tseg.runtime.wsi.slide.open_slide` (see there).
DECODERS = ("auto", "openslide", "tifffile")
#: How to convert a format tseg-rt cannot read into one it can (one line, in every refusal).
CONVERT = ("to a pyramidal 8-bit RGB OME-TIFF with Bio-Formats' bfconvert (e.g. `bfconvert -noflat "
           "-pyramid-resolutions 6 -pyramid-scale 2 -tilex 512 -tiley 512 {name} OUT.ome.tiff`) or QuPath "
           "(File > Export images > OME TIFF), then run that file.")
#: OpenSlide's CZI pixel types, in words.
CZI_PIXELS = {"GRAY8": "8-bit grey", "GRAY16": "16-bit grey", "GRAY32FLOAT": "32-bit float grey",
              "BGR48": "16-bit-per-channel colour", "BGR96FLOAT": "32-bit float colour"}


def unreadable_format(p: Path) -> str | None:
    """Why ``p`` is in a format tseg-rt cannot read, with what to convert it with, or None: an
    Olympus/Evident cellSens ``.vsi`` (its pixels are in ``.ets`` files) or ``.ets`` file."""
    try:
        with open_regular(p) as fh:
            head = fh.read(4)
    except (OSError, UnsafeFileError):
        return None
    if p.suffix.lower() == ".vsi":
        return (f"an Olympus/Evident cellSens VSI slide: the .vsi file holds only an overview picture and the scan "
                f"is in the .ets files of its folder _{p.stem}_/, a format tseg-rt cannot read. Keep that folder "
                f"beside the .vsi and convert the .vsi {CONVERT.format(name=p.name)}")
    if p.suffix.lower() == ".ets" or head == b"SIS\x00":
        vsi = next((d.parent / f"{d.name.strip('_')}.vsi" for d in p.parents if d.name.startswith("_")
                    and d.name.endswith("_") and len(d.name) > 2), None)
        name = vsi.name if vsi is not None else "SLIDE.vsi"
        return (f"an Olympus/Evident cellSens .ets pixel file (part of a .vsi slide), a format tseg-rt cannot "
                f"read. Convert the slide's .vsi file ({name}, with its folder beside it) {CONVERT.format(name=name)}")
    return None


def czi_refusal(p: Path, error: str) -> str | None:
    """Why OpenSlide could not read the Zeiss CZI ``p`` (``error``: its message), in words, with
    what to convert it with; None when ``p`` is not a CZI file."""
    try:
        with open_regular(p) as fh:
            if fh.read(10) != b"ZISRAWFILE":
                return None
    except (OSError, UnsafeFileError):
        return None
    match = re.search(r"[Pp]ixel type (\w+) is not supported", error)
    if match:
        kind = match.group(1).upper()
        pixels = f"{CZI_PIXELS.get(kind, kind)} pixels ({match.group(1).title()})"
        return (f"a Zeiss CZI with {pixels}, a pixel type tseg-rt cannot read: it reads 8-bit RGB brightfield "
                f"scans (grey pixels are usually fluorescence, which it does not segment). If this is an H&E "
                f"brightfield scan, convert it {CONVERT.format(name=p.name)}")
    return f"a Zeiss CZI that OpenSlide cannot read ({error}). Convert it {CONVERT.format(name=p.name)}"


def open_source(p: Path | str, decoder: str = "auto") -> SlideSource:
    """The reader for ``p``: a DICOMweb series URL, DICOM series, OME-TIFF (tifffile), OpenSlide
    (its metadata, with TIFF-family tiles decoded directly unless ``decoder="openslide"``), then
    tifffile."""
    if is_dicomweb_url(p):
        from tseg.runtime.wsi.dicomweb_source import DicomWebSource

        return DicomWebSource(str(p))
    p = Path(p)
    if not p.exists():
        raise SlideNotFoundError(p, "no such file or folder")
    if not p.is_dir():
        try:  # a FIFO, socket or device would block or never end; OpenSlide opens by path
            check_regular(p)
        except UnsafeFileError as exc:
            raise NotRegularFileError(p, exc.what) from None
    if dicom.is_dicom_slide_path(p):
        return dicom.DicomSource(p)
    if p.is_dir():
        raise UnsupportedSlideError(p, "is a folder; give a slide file, a DICOM series folder, or use "
                                       "`tseg-rt run FOLDER` to search it")
    unreadable = unreadable_format(p)
    if unreadable:
        raise UnsupportedSlideError(p, unreadable)
    source: SlideSource | None = None
    errors: list[str] = []
    if is_ome_tiff(p):
        return tifffile_source(p)
    import openslide

    try:
        source = OpenSlideSource(p)
        source = DirectTiffSource.wrap(p, source, direct=decoder in ("auto", "tifffile"))
    except openslide.OpenSlideUnsupportedFormatError:
        errors.append("OpenSlide: unsupported or missing image file")
    except openslide.OpenSlideError as exc:
        czi = czi_refusal(p, str(exc))
        if czi:
            raise UnsupportedSlideError(p, czi) from None
        errors.append(f"OpenSlide: {exc}")
    if source is None:
        try:
            source = tifffile_source(p)
        except (UnsupportedPixelsError, DamagedTiffError):
            raise  # pixels tseg-rt cannot read, or a TIFF whose structure is impossible: say why
        except UnsupportedSlideError as exc:
            errors.append(str(exc).split(": ", 1)[-1])
        except Exception as exc:
            errors.append(f"tifffile: {exc}")
    if source is None:
        raise UnsupportedSlideError(
            p,
            "not a slide format tseg-rt can read (" + "; ".join(errors) + "). Supported: the "
            "formats OpenSlide reads (Aperio .svs, Hamamatsu .ndpi, generic tiled TIFF, MIRAX, "
            "Philips, Leica, Ventana, DICOM series, ...) and OME-TIFF. Is the file complete?",
        )
    return source


def tifffile_source(p: Path) -> TiffFileSource:
    """``TiffFileSource(p)``; pixels it cannot read (grey, not 8-bit) refused with what to do."""
    try:
        return TiffFileSource(p)
    except UnsupportedPixelsError as exc:  # a TIFF read, with pixels that are not 8-bit RGB(A)
        raise UnsupportedPixelsError(
            p, f"a TIFF tseg-rt cannot read: {exc.message}, and tseg-rt reads 8-bit RGB brightfield scans. If this "
               f"is an H&E brightfield scan, convert it {CONVERT.format(name=p.name)}") from None


def stored_mpp(p: Path | str) -> tuple[float, float] | None:
    """The slide's own plausible level-0 resolution, or None (missing, implausible, or the slide
    cannot be opened): what a run without ``--mpp`` would use (for resume decisions)."""
    try:
        source = open_source(p)
    except TsegError:
        return None
    try:
        return plausible_mpp(source.mpp())
    finally:
        source.close()
