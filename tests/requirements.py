"""Tests that need a tool which may be missing on a developer's machine (Orthanc, Slurm, a
headless browser, dciodvfy, the real TensorRT bindings, the real scanner files of ../shared): skip with the reason and the fix, or
fail where the tool is required.

A tool is required on CI (``$CI`` set) and wherever its own variable ``TSEG_REQUIRE_<TOOL>`` is
set (``.ci/run`` sets them all: CI installs every tool, so a test that would skip there is a
broken install, not a missing tool).
"""

from __future__ import annotations

import os

import pytest

#: The tools, each with the variable that makes it required.
TOOLS = {
    "orthanc": "TSEG_REQUIRE_ORTHANC",
    "slurm": "TSEG_REQUIRE_SLURM",
    "browser": "TSEG_REQUIRE_BROWSER",
    "dciodvfy": "TSEG_REQUIRE_DCIODVFY",
    "real_bindings": "TSEG_REQUIRE_REAL_BINDINGS",
    "shared": "TSEG_REQUIRE_SHARED",  # ../shared: the real scanner files and tiles, beside every CI checkout
}


def required(tool: str) -> bool:
    """Whether a test that needs ``tool`` must fail, not skip, without it."""
    return bool(os.environ.get("CI") or os.environ.get(TOOLS[tool]))


def require(tool: str, reason: str | None) -> None:
    """Go on when ``reason`` is None (``tool`` is usable here); else skip with ``reason``, or fail
    with it where ``tool`` is :func:`required`."""
    if reason is None:
        return
    if required(tool):
        pytest.fail(f"{reason} (required here: $CI or ${TOOLS[tool]} is set)")
    pytest.skip(reason)
