"""``tseg-rt demo --slide-only PATH``: a slide to try ``serve`` and ``watch`` with."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_demo_slide_only_writes_the_demo_slide_and_nothing_else(tmp_path, monkeypatch):
    """Through the command (in process; the demo's 9 x 5 mm made 1.6 x 1 mm to stay quick)."""
    from typer.testing import CliRunner

    import tseg.runtime.evaluation.demo as demo
    from tseg.runtime.cli.main import app
    from tseg.runtime.wsi.slide import open_slide

    monkeypatch.setattr(demo, "DEMO_SIZE_MM", (1.6, 1.0))
    target = tmp_path / "inbox" / "try-me.tiff"
    done = CliRunner().invoke(app, ["demo", "--slide-only", str(target)])
    assert done.exit_code == 0, done.output
    assert str(target) in done.output and "tseg-rt serve" in done.output
    with open_slide(target) as slide:
        assert slide.mpp == (0.5, 0.5) and slide.size_mm() == pytest.approx((1.6, 1.0), abs=0.01)
    assert sorted(p.name for p in target.parent.iterdir()) == ["try-me.geojson", "try-me.mask.png", "try-me.tiff"]
    assert not (tmp_path / "demo-output").exists()


def test_demo_slide_only_refuses_a_name_that_is_not_a_tiff(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tseg.runtime.cli", "demo", "--slide-only", str(tmp_path / "x.svs")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "x.svs" in done.stderr and ".tiff" in done.stderr and "Traceback" not in done.stderr
