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


def attribute_problem(ds: Any) -> str | None:
    """The first problem with the attributes of a WSI file's header, in the user's terms, or None."""
    for keyword, (name, tag) in UIDS.items():
        value = ds.get(keyword)
        if value is None and keyword == "FrameOfReferenceUID":
            continue
        problem = uid_problem(str(value or ""), name, tag) if value else f"it has no {name} ({tag})"
        if problem:
            return problem
    image_type = [str(v) for v in (ds.get("ImageType") or ())]
    if len(image_type) < 3:
        found = "is missing" if not image_type else f"has {len(image_type)} value(s), " + "\\".join(image_type)
        return (f"its Image Type (0008,0008) {found}; a whole-slide image needs at least three values, the third "
                "saying which kind of image it is (e.g. ORIGINAL\\PRIMARY\\VOLUME\\NONE for a pyramid level, "
                "LABEL, OVERVIEW, THUMBNAIL)")
    return None


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
            raise UnsupportedSlideError(path, f"is not a valid DICOM whole-slide image: {problem}; {_FIX}")
