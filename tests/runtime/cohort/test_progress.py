"""The cohort progress line: slides done, failed and running, tiles per second, slides per hour."""

from __future__ import annotations

from pathlib import Path

from tseg.runtime.cohort.outcomes import SlideOutcome
from tseg.runtime.cohort.progress import BatchProgress


def test_the_cohort_line_counts_slides_and_tiles():
    bar = BatchProgress(3, enabled=False, per_slide_tiles=False)
    for name in ("a", "b", "c"):
        bar.slide_started(Path(f"{name}.svs"), name)
    bar.slide_started(Path("a.svs"), "a")  # put back (locked elsewhere) and started again: still one
    bar.tiles_done(40)
    bar.slide_done(SlideOutcome("a.svs", "a", "done"))
    bar.slide_done(SlideOutcome("b.svs", "b", "failed", "b.svs: broken"))
    assert (bar.done, bar.failed, bar.running, bar.tiles) == (1, 1, 1, 40)
    line = bar.status()
    assert line.startswith("1 done · 1 failed · 1 running · ") and "tiles/s" in line and "slides/h" in line


def test_not_on_a_terminal_plain_progress_lines_at_a_steady_interval(caplog):
    """A bar written to a file or pipe came out cut ("0:0…"): there, plain log lines instead."""
    import io
    import logging

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=40)  # a file: not a terminal
    caplog.set_level(logging.INFO, logger="tseg.runtime.cohort.progress")
    with BatchProgress(2, enabled=True, console=console, interval_s=0.0) as bar:
        bar.slide_started(Path("a.svs"), "a")
        bar.tiles_planned(3)
        for i in range(3):
            bar.tile_done(i, True)
        bar.slide_done(SlideOutcome("a.svs", "a", "done"))
    assert out.getvalue() == ""  # no bar drawn into the file
    lines = [r.getMessage() for r in caplog.records if r.name == "tseg.runtime.cohort.progress"]
    assert any("a: tile 3 of 3" in line for line in lines), lines
    assert any(line.startswith("slides 1 of 2: 1 done · 0 failed · 0 running") for line in lines), lines
    assert not any("…" in line for line in lines)


def test_progress_lines_are_rate_limited(caplog):
    import io
    import logging

    from rich.console import Console

    caplog.set_level(logging.INFO, logger="tseg.runtime.cohort.progress")
    with BatchProgress(1, enabled=True, console=Console(file=io.StringIO()), interval_s=3600) as bar:
        bar.slide_started(Path("a.svs"), "a")
        bar.tiles_planned(100)
        for i in range(100):
            bar.tile_done(i, True)
    tile_lines = [r for r in caplog.records if "tile " in r.getMessage()]
    assert len(tile_lines) <= 1  # the first line, then one an hour


def test_library_loggers_stay_quiet_unless_verbose(tmp_path):
    """tifffile's own ERROR line leaked ahead of tseg-rt's message about a truncated chunk."""
    import subprocess
    import sys

    code = ("import logging; from tseg.runtime.cli.common import setup_logging; import sys\n"
            "setup_logging(int(sys.argv[1]))\n"
            "logging.getLogger('tifffile').error('<tifffile.TiffPages @8> invalid page offset 801174')\n"
            "logging.getLogger('tseg.runtime.wsi.slide').warning('TIFF chunk 76 of level 0 is truncated')\n")
    quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True)
    assert "TIFF chunk 76" in quiet.stderr and "tifffile" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True)
    assert "invalid page offset" in loud.stderr and "TIFF chunk 76" in loud.stderr
