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
