"""Options declared once (:mod:`tseg.runtime.cli.options`): the per-slide options are generated
from SlideOptions' fields, and serve and watch take every per-slide and reading option that
applies to them. In process (typer's runner), with the service itself replaced: nothing starts."""

from __future__ import annotations

from dataclasses import fields

import pytest
from typer.testing import CliRunner

import tseg.runtime.service.server as server
from tseg.runtime.cli.main import app
from tseg.runtime.cli.options import SLIDE
from tseg.runtime.cohort.options import SlideOptions


@pytest.fixture
def started(monkeypatch):
    """The ServiceConfig each command would start the service (or the hot folder) with."""
    seen = {}
    monkeypatch.setattr(server, "watch", lambda config: seen.setdefault("watch", config))
    monkeypatch.setattr(server, "serve", lambda config, host, port, token: seen.setdefault("serve", config))
    return seen


def test_slide_options_are_generated_from_the_fields():
    flagged = [f for f in fields(SlideOptions) if f.metadata["flag"]]
    assert [p.name for p in SLIDE.params] == [f.name for f in flagged]
    for p, f in zip(SLIDE.params, flagged):
        option = p.annotation.__metadata__[0]
        assert (p.default, option.help, option.min, option.max) == (f.default, f.metadata["help"], f.metadata["min"],
                                                                      f.metadata["max"])


@pytest.mark.parametrize("command", ["watch", "serve"])
def test_serve_and_watch_take_the_reading_and_per_slide_options(command, started, tmp_path):
    where = [str(tmp_path)] if command == "watch" else ["--watch", str(tmp_path)]
    result = CliRunner().invoke(app, [command, *where, "--out", str(tmp_path / "out"), "--max-slide-mm", "30",
                                      "--reader-threads", "2", "--low", "40", "--no-prune", "--mpp", "0.5,0.6",
                                      "--overlay-style", "contour", "--settle", "1", "--poll", "0.5"])
    assert result.exit_code == 0, result.output
    config = started[command]
    assert (config.max_slide_mm, config.reader_threads) == (30.0, 2)
    assert config.defaults == SlideOptions(mpp=(0.5, 0.6), low=40, prune=False, overlay_style="contour")
    assert [(h.folder, h.settle_s, h.poll_s) for h in config.hot_folders] == [(tmp_path, 1.0, 0.5)]
    assert config.out == tmp_path / "out" and config.dicom is None


def test_serve_without_a_hot_folder(started, tmp_path):
    result = CliRunner().invoke(app, ["serve", "--out", str(tmp_path), "--no-prune", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert started["serve"].hot_folders == () and started["serve"].defaults == SlideOptions(prune=False)


def test_a_bad_per_slide_option_exits_2_before_anything_starts(started, tmp_path):
    result = CliRunner().invoke(app, ["watch", str(tmp_path), "--low", "200", "--high", "100"])
    assert result.exit_code == 2 and "low < high" in result.output and not started
