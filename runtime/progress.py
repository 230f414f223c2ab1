"""Progress bars for batches: slides, and tiles of the current slide with tiles per second."""

from __future__ import annotations

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


class BatchProgress:
    """Two bars (slides; tiles with tiles/s). Disabled: every callback is a no-op."""

    def __init__(self, slides: int, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False,
        )
        self._slides = self._progress.add_task("slides", total=slides, rate="")
        self._tiles: Any = None

    def __enter__(self) -> "BatchProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def slide_started(self, slide: Path, name: str) -> None:
        if self._tiles is not None:
            self._progress.remove_task(self._tiles)
        self._tiles = self._progress.add_task(f"  {name[:40]}", total=None, rate="")

    def tiles_planned(self, count: int) -> None:
        if self._tiles is not None:
            self._progress.update(self._tiles, total=count)

    def tile_done(self, index: int, was_run: bool) -> None:
        if self._tiles is None:
            return
        self._progress.advance(self._tiles)
        task = next((t for t in self._progress.tasks if t.id == self._tiles), None)
        if task is not None and task.elapsed:
            self._progress.update(self._tiles, rate=f"{task.completed / task.elapsed:.2f} tiles/s")

    def slide_done(self, outcome: Any) -> None:
        self._progress.advance(self._slides)
        task = next(t for t in self._progress.tasks if t.id == self._slides)
        if task.elapsed and task.completed:
            self._progress.update(self._slides, rate=f"{3600 * task.completed / task.elapsed:.0f} slides/h")
