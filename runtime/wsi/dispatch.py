"""Which kind of source reads a path: a DICOMweb series (a URL), a DICOM series, OME-TIFF,
OpenSlide (with TIFF-family tiles decoded directly), then tifffile for TIFFs OpenSlide refuses."""

from __future__ import annotations

from pathlib import Path

from tseg.runtime.errors import NotRegularFileError, SlideNotFoundError, TsegError, UnsupportedSlideError
from tseg.runtime.util.safeio import UnsafeFileError, check_regular
from tseg.runtime.wsi import dicom_source as dicom
from tseg.runtime.wsi.dicomweb_source import is_dicomweb_url
from tseg.runtime.wsi.mpp import plausible_mpp
from tseg.runtime.wsi.openslide_source import OpenSlideSource
from tseg.runtime.wsi.base import SlideSource
from tseg.runtime.wsi.tiff_decode import DamagedTiffError
from tseg.runtime.wsi.tifffile_source import DirectTiffSource, TiffFileSource, is_ome_tiff

#: ``decoder=`` choices of :func:`tseg.runtime.wsi.slide.open_slide` (see there).
DECODERS = ("auto", "openslide", "tifffile")


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
    source: SlideSource | None = None
    errors: list[str] = []
    if is_ome_tiff(p):
        return TiffFileSource(p)
    import openslide

    try:
        source = OpenSlideSource(p)
        source = DirectTiffSource.wrap(p, source, direct=decoder in ("auto", "tifffile"))
    except openslide.OpenSlideUnsupportedFormatError:
        errors.append("OpenSlide: unsupported or missing image file")
    except openslide.OpenSlideError as exc:
        errors.append(f"OpenSlide: {exc}")
    if source is None:
        try:
            source = TiffFileSource(p)
        except DamagedTiffError:
            raise  # a TIFF whose structure is impossible: say why, not "not a slide format"
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
