"""Shared fixtures: real data from ../shared/data when present, generated slides otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real test data not present: ../shared/data (or $TSEG_SHARED_DATA) is absent "
                    "in this checkout; it is not distributed with the repository")
    return d
