"""Progress bars for batches: one bar for the cohort (slides done, failed and running, tiles per
second, slides per hour), and, when slides run in this process, one for the tiles of the current
slide. A batch on several processes or a cluster shows the cohort bar alone, fed by
``slide_started``, ``slide_done`` and ``tiles_done``.

Not on a terminal (a log file, a pipe, a batch system's output), a bar is drawn badly (cut to
"0:0…"): there the same figures are logged as plain lines (logger ``tseg.runtime.cohort.progress``,
at INFO, shown by the command line without ``-v``), at most one every ``interval_s`` seconds, and
one for each slide that ends."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

#: Seconds between two progress lines when the output is not a terminal.
PLAIN_INTERVAL_S = 30.0


class BatchProgress(BatchEvents):
    """The cohort bar, plus a tile bar per slide (``per_slide_tiles``). Disabled: every callback
    only counts."""

    def __init__(self, slides: int, enabled: bool = True, console: Console | None = None,
                 per_slide_tiles: bool = True, interval_s: float = PLAIN_INTERVAL_S) -> None:
        console = console if console is not None else Console(stderr=True)
        self.plain = enabled and not console.is_terminal
        self.enabled = enabled
        self.per_slide_tiles = per_slide_tiles
        self._interval_s = interval_s
        self._last_line = float("-inf")
        self._slide_name = ""
        self._slide_tiles = self._slide_total = 0
        self._total = slides
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled or self.plain, transient=False,
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

    def _line(self, force: bool = False) -> None:
        """A plain progress line (not on a terminal), at most one every ``interval_s``."""
        now = time.monotonic()
        if not self.plain or (not force and now - self._last_line < self._interval_s):
            return
        self._last_line = now
        line = f"slides {self.done + self.failed} of {self._total}: {self.status()}"
        if self.per_slide_tiles and self._slide_name and self._slide_total:
            line += f"; {self._slide_name}: tile {self._slide_tiles} of {self._slide_total}"
        log.info("%s", line)

    def slide_started(self, slide: Path, name: str) -> None:
        self._running.add(str(slide))
        self._slide_name, self._slide_tiles, self._slide_total = name, 0, 0
        if self.per_slide_tiles:
            if self._tiles is not None:
                self._progress.remove_task(self._tiles)
            self._tiles = self._progress.add_task(f"  {name[:40]}", total=None, rate="")
        self._refresh()

    def tiles_planned(self, count: int) -> None:
        self._slide_total = count
        if self._tiles is not None:
            self._progress.update(self._tiles, total=count)

    def tile_done(self, index: int, was_run: bool) -> None:
        """One tile of the slide in this process (its bar); the cohort's count comes from ``tiles_done``."""
        self._slide_tiles += 1
        self._line()
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
        self._line()

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
        self._line(force=True)
