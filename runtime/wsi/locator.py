"""Where a slide is: a local path (file, or DICOM series folder) or a DICOMweb series URL.

Batches, resume rules and summaries name slides by one string each (:func:`slide_key`): the
resolved path of a local slide, the canonical ``http(s)://.../studies/S/series/T`` URL of a
DICOMweb series. URLs stay strings everywhere: ``pathlib.Path`` would fold their ``//``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from tseg.runtime.wsi.dicomweb_source import DicomWebLocation, is_dicomweb_url

#: A slide as the library takes it: a local path, or a DICOMweb series URL (a string).
SlideRef = Union[Path, str]


def is_remote(slide: object) -> bool:
    """True for a DICOMweb series URL."""
    return is_dicomweb_url(slide)


def as_slide(slide: str | os.PathLike[str]) -> SlideRef:
    """``slide`` as a Path, or, for a DICOMweb URL, its canonical URL string."""
    if is_dicomweb_url(slide):
        return DicomWebLocation.parse(str(slide)).url
    return Path(slide)


def slide_key(slide: str | os.PathLike[str]) -> str:
    """The one string that names a slide: resolved path, or canonical DICOMweb URL."""
    if is_dicomweb_url(slide):
        return DicomWebLocation.parse(str(slide)).url
    return str(Path(slide).resolve())


def slide_exists(slide: str | os.PathLike[str]) -> bool:
    """Whether a local slide exists; a URL is assumed to (the server is asked when it is read)."""
    return True if is_dicomweb_url(slide) else Path(slide).exists()
