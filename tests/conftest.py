"""Shared fixtures: real data from ../shared/data when present, generated slides otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import shared_data_dir
from requirements import require


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        require("shared", "real test data not present: ../shared/data (or $TSEG_SHARED_DATA) is absent "
                          "in this checkout; it is not distributed with the repository")
    return d


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc DICOMweb server on a free loopback port (tests/orthanc.py), for the session."""
    from orthanc import Orthanc

    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dicom_wsi(tmp_path_factory):
    """A generated DICOM WSI (wsidicomizer from a generated TIFF; tests/orthanc.py): (files, tiff)."""
    pytest.importorskip("wsidicomizer")
    from orthanc import generated_dicom_wsi

    return generated_dicom_wsi(tmp_path_factory.mktemp("dicom-wsi"))


@pytest.fixture(scope="session")
def stored_wsi(orthanc, dicom_wsi):
    """``dicom_wsi`` stored in ``orthanc`` (STOW-RS): its series URL."""
    import pydicom

    files, _ = dicom_wsi
    orthanc.store_files(files)
    first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    return orthanc.series_url(first.StudyInstanceUID, first.SeriesInstanceUID)
