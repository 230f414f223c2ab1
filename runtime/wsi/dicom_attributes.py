"""Checks of the DICOM attributes tseg-rt relies on in a whole-slide image, before a reader sees
the file, so that a non-conformant file is refused with the attribute's name and the fix, not
with a reader's words ("Couldn't get image flavor", "not a valid series instance UID").

Pure functions over pydicom datasets (headers only); :func:`check_series_files` reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from tseg.runtime.errors import UnsupportedSlideError

#: Keyword -> (name as the standard writes it, tag) of the UIDs every WSI file carries.
UIDS = {"StudyInstanceUID": ("Study Instance UID", "0020,000D"),
        "SeriesInstanceUID": ("Series Instance UID", "0020,000E"),
        "SOPInstanceUID": ("SOP Instance UID", "0008,0018"),
        "FrameOfReferenceUID": ("Frame of Reference UID", "0020,0052")}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_FIX = ("correct it in the file (e.g. dcmodify from DCMTK) or convert the slide again with a conformant tool "
        "(e.g. wsidicomizer)")


def uid_problem(value: str, name: str, tag: str) -> str | None:
    """Why ``value`` is not a valid UID (PS3.5 §9.1: digits and dots, no leading zeros, at most
    64 characters), or None."""
    if len(value) > 64:
        return f"its {name} ({tag}) is {len(value)} characters long; a DICOM UID has at most 64 (PS3.5 §9.1)"
    if not _UID.match(value):
        return f"its {name} ({tag}) {value!r} is not a valid DICOM UID (digits and dots, PS3.5 §9.1)"
    return None


def raw_values(ds: Any, keyword: str) -> list[str] | None:
    """An attribute's values as text, read from the raw element: never converted (nor validated,
    whatever pydicom's validation mode), so that a non-conformant value can be named."""
    from pydicom.datadict import tag_for_keyword

    elem = ds.get_item(tag_for_keyword(keyword))
    if elem is None:
        return None
    value = elem.value
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return [v.strip(" \0") for v in value.split("\\")] if value.strip(" \0") else []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") else [str(value)]


def attribute_problem(ds: Any) -> str | None:
    """The first problem with the attributes of a WSI file's header, in the user's terms, or None."""
    for keyword, (name, tag) in UIDS.items():
        values = raw_values(ds, keyword)
        if values is None and keyword == "FrameOfReferenceUID":
            continue
        value = values[0] if values else ""
        problem = uid_problem(value, name, tag) if value else f"it has no {name} ({tag})"
        if problem:
            return problem
    image_type = raw_values(ds, "ImageType") or []
    if len(image_type) < 3:
        found = "is missing" if not image_type else f"has {len(image_type)} value(s), " + "\\".join(image_type)
        return (f"its Image Type (0008,0008) {found}; a whole-slide image needs at least three values, the third "
                "saying which kind of image it is (e.g. ORIGINAL\\PRIMARY\\VOLUME\\NONE for a pyramid level, "
                "LABEL, OVERVIEW, THUMBNAIL)")
    return None


def refusal(problem: str) -> str:
    """The refusal of a file with an attribute problem (after the file's name)."""
    return f"is not a valid DICOM whole-slide image: {problem}; {_FIX}"


def check_series_files(files: Sequence[Path]) -> None:
    """UnsupportedSlideError naming the first file of a series with an attribute problem."""
    import pydicom

    for path in files:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # unreadable files are refused where they are grouped
            continue
        problem = attribute_problem(ds)
        if problem:
            raise UnsupportedSlideError(path, refusal(problem))
