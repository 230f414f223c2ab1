"""Progress bars for batches: one bar for the cohort (slides done, failed and running, tiles per
second, slides per hour), and, when slides run in this process, one for the tiles of the current
slide. A batch on several processes or a cluster shows the cohort bar alone, fed by
``slide_started``, ``slide_done`` and ``tiles_done``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tseg.runtime.cohort.outcomes import BatchEvents


class BatchProgress(BatchEvents):
    """The cohort bar, plus a tile bar per slide (``per_slide_tiles``). Disabled: every callback
    only counts."""

    def __init__(self, slides: int, enabled: bool = True, console: Console | None = None,
                 per_slide_tiles: bool = True) -> None:
        self.enabled = enabled
        self.per_slide_tiles = per_slide_tiles
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False,
        )
        self._slides = self._progress.add_task("slides", total=slides, rate="")
        self._tiles: Any = None
        self.done = self.failed = self.tiles = 0
        self._running: set[str] = set()  # a slide put back (locked elsewhere) and restarted counts once
        self._t0 = time.monotonic()

    def __enter__(self) -> "BatchProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def status(self) -> str:
        """``3 done · 1 failed · 2 running · 4.2 tiles/s · 120 slides/h``."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        parts = [f"{self.done} done", f"{self.failed} failed", f"{self.running} running"]
        if self.tiles:
            parts.append(f"{self.tiles / elapsed:.2f} tiles/s")
        if self.done + self.failed:
            parts.append(f"{3600 * (self.done + self.failed) / elapsed:.0f} slides/h")
        return " · ".join(parts)

    @property
    def running(self) -> int:
        return len(self._running)

    def _refresh(self) -> None:
        self._progress.update(self._slides, rate=self.status())

    def slide_started(self, slide: Path, name: str) -> None:
        self._running.add(str(slide))
        if self.per_slide_tiles:
            if self._tiles is not None:
                self._progress.remove_task(self._tiles)
            self._tiles = self._progress.add_task(f"  {name[:40]}", total=None, rate="")
        self._refresh()

    def tiles_planned(self, count: int) -> None:
        if self._tiles is not None:
            self._progress.update(self._tiles, total=count)

    def tile_done(self, index: int, was_run: bool) -> None:
        """One tile of the slide in this process (its bar); the cohort's count comes from ``tiles_done``."""
        if self._tiles is None:
            return
        self._progress.advance(self._tiles)
        task = next((t for t in self._progress.tasks if t.id == self._tiles), None)
        if task is not None and task.elapsed:
            self._progress.update(self._tiles, rate=f"{task.completed / task.elapsed:.2f} tiles/s")

    def tiles_done(self, count: int) -> None:
        """``count`` more tiles finished somewhere in the batch."""
        self.tiles += count
        self._refresh()

    def slide_done(self, outcome: Any) -> None:
        if outcome is None:
            self._running.clear()
        else:
            self._running.discard(str(outcome.slide))
        if outcome is None or getattr(outcome, "ok", True):
            self.done += 1
        else:
            self.failed += 1
        self._progress.advance(self._slides)
        self._refresh()
