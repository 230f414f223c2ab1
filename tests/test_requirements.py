"""The one way a test says it needs a tool: skip locally, fail on CI (tests/requirements.py)."""

from __future__ import annotations

import pytest

from requirements import TOOLS, require


@pytest.fixture
def local(monkeypatch):
    for name in ("CI", *TOOLS.values()):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_present_tool_goes_on(local):
    local.setenv("CI", "1")
    require("orthanc", None)


def test_a_missing_tool_skips_locally_with_the_reason(local):
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require("browser", "no headless browser (apt-get install chromium)")


@pytest.mark.parametrize("variable", ["CI", "TSEG_REQUIRE_BROWSER"])
def test_a_missing_tool_fails_on_ci_or_where_required(local, variable):
    local.setenv(variable, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no headless browser.*required here: \$CI or \$TSEG_REQUIRE_BROWSER"):
        require("browser", "no headless browser")


def test_the_variable_of_one_tool_does_not_require_another(local):
    local.setenv("TSEG_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception):
        require("slurm", "Slurm is not installed")
