"""Importing wsidicomizer (for ``--dicom-wsi``) must not change how the rest of the process reads DICOM."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO

pytest.importorskip("wsidicomizer")

# In a fresh process: write a file with one malformed value (Instance Number "abc"), import
# wsidicomizer one way or the other, then read the value back.
SCRIPT = """
import json, sys, warnings
import pydicom
from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

warnings.simplefilter("ignore")
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 4, b"abc ", 0, False, True)  # as a file would carry it
ds.save_as(sys.argv[2], enforce_file_format=True)
before = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
if sys.argv[1] == "tseg":
    from tseg.runtime.outputs.dicom_source import wsidicomizer_class
    wsidicomizer_class()
else:
    import wsidicomizer  # noqa: F401
after = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
try:
    read = str(pydicom.dcmread(sys.argv[2]).InstanceNumber)
except Exception as exc:
    read = f"{type(exc).__name__}: {exc}"
print(json.dumps({"before": before, "after": after, "read": read}))
"""


def _run(how: str, path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, how, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_wsidicomizer_leaves_pydicoms_validation_as_it_was(tmp_path):
    # wsidicomizer's own import turns pydicom's strict mode on for the whole process ...
    bare = _run("bare", tmp_path / "a.dcm")
    assert bare["after"] != bare["before"] and "Invalid value" in bare["read"]
    # ... tseg-rt's import of it does not: the malformed value still reads (with pydicom's warning).
    ours = _run("tseg", tmp_path / "b.dcm")
    assert ours["after"] == ours["before"] and ours["read"] == "abc"
