"""dciodvfy (dicom3tools) for tests: the errors it reports on a DICOM file, less its known false
positives. Missing locally, the test skips with the reason; where it is required
(:mod:`requirements`: on CI) it fails."""

from __future__ import annotations

import shutil
import subprocess

from requirements import require

#: dciodvfy (dicom3tools 2022, Debian 12) errors that are about dciodvfy, not the objects:
#: TILED_FULL Segmentations omit the per-frame functional groups (positions follow from the
#: frame order, PS3.3 C.7.6.17.3), which this dicom3tools predates for Segmentation; and it
#: reports General Series' Laterality (type 2C, on a paired body part) as missing when absent
#: and as forbidden when present, for an object with no body part.
DCIODVFY_KNOWN = {
    "tiled_full": ("<PlanePositionSequence>", "<PlaneOrientationSequence>", "<PlanePositionSlideSequence>",
                   "<PerFrameFunctionalGroupsSequence>", "<SegmentIdentificationSequence>"),
    "annotations": ("<Laterality>",),
}


def dciodvfy_errors(path, kind):
    tool = shutil.which("dciodvfy")
    require("dciodvfy", "dciodvfy is not installed (Debian: apt-get install dicom3tools)" if tool is None else None)
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    known = DCIODVFY_KNOWN["annotations" if kind == "annotations" else "tiled_full"]
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error") and not any(k in line for k in known)]
