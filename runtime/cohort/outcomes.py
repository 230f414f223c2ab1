"""What became of each slide of a batch, and the batch's account of them (the ledger).

Every runner (this process, local worker processes, Ray) turns a slide into a
:class:`SlideOutcome`; the process that runs the batch records them in one :class:`Ledger`, so
the table, the cohort report's failure list and the exit status are the same wherever slides ran.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tseg.runtime.errors import TsegError
from tseg.runtime.util.signals import describe_signal, signal_of

log = logging.getLogger(__name__)


@dataclass
class SlideOutcome:
    """What became of one slide (its summary when it was processed; why, for the table's notes)."""

    slide: str
    name: str
    status: str  # done | skipped | postprocessed | locked | failed
    error: str | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # why it was skipped / redone / post-processed again, or who holds the lock
    holder: str = ""  # for ``locked``: the process holding the slide's lock
    error_cli: str | None = None  # the error as the command line shows it
    worker: str = ""  # which worker processed it (several processes or a cluster), for logs
    error_type: str = ""  # for ``failed``: the exception's class name (e.g. MissingMppError), for callers' codes

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped", "postprocessed")


class BatchInterrupted(KeyboardInterrupt):
    """SIGINT (or SIGTERM, ``signum``: :mod:`tseg.runtime.util.signals`) during a batch: what
    was finished, what was being processed, what was left."""

    def __init__(self, outcomes: list[SlideOutcome], in_progress: list[str], not_started: list[str],
                 signum: int = signal.SIGINT) -> None:
        self.outcomes = outcomes
        self.in_progress = in_progress
        self.not_started = not_started
        self.signum = int(signum)
        super().__init__(self.message())

    def message(self) -> str:
        done = sum(o.ok for o in self.outcomes)
        failed = len(self.outcomes) - done
        current = (f"while processing {', '.join(self.in_progress)} (its partial outputs were removed)"
                   if self.in_progress else "between slides")
        return (f"{describe_signal(self)} {current}; {done} slide(s) finished, {failed} failed, "
                f"{len(self.in_progress) + len(self.not_started)} left"
                + (f" ({len(self.not_started)} not started)" if self.not_started else "")
                + ". Run the same command again to continue: finished slides are skipped.")


def failed_outcome(slide: Path, name: str, exc: BaseException, t0: float) -> SlideOutcome:
    """The outcome of a slide that failed with ``exc`` (a TsegError's own message; memory, OS
    and unexpected errors in one line, the unexpected ones logged with their traceback)."""
    seconds = time.perf_counter() - t0
    kind = type(exc).__name__
    if isinstance(exc, TsegError):
        return SlideOutcome(str(slide), name, "failed", str(exc), seconds, error_cli=exc.cli_message(), error_type=kind)
    if isinstance(exc, MemoryError):
        text = f"{slide}: out of memory"
    elif isinstance(exc, OSError):
        text = f"{slide}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    else:  # a bug or a library error on an odd slide: report it, keep going
        log.error("unexpected error on %s", slide, exc_info=exc)
        text = f"{slide}: unexpected error: {exc!r}"
    return SlideOutcome(str(slide), name, "failed", text, seconds, error_cli=text, error_type=kind)


class BatchEvents:
    """What a batch tells its caller as it goes (progress bars, a service's job state). Every
    method does nothing here: subclass and override the ones you need
    (:class:`~tseg.runtime.cohort.progress.BatchProgress` does)."""

    def slide_started(self, slide: Path, name: str) -> None:
        """``slide`` (result folder ``name``) is being processed, here or on a worker."""

    def slide_done(self, outcome: SlideOutcome) -> None:
        """A slide's final outcome (in the order slides finish)."""

    def tiles_planned(self, count: int) -> None:
        """The slide being processed in this process has ``count`` tiles."""

    def tile_done(self, index: int, was_run: bool) -> None:
        """Tile ``index`` of the slide being processed in this process is merged."""

    def tiles_done(self, count: int) -> None:
        """``count`` more tiles finished somewhere in the batch (every runner)."""

    def lock_wait(self, slide: Path, holder: str) -> None:
        """This process waits for ``holder``, which holds ``slide``'s lock."""


class Ledger:
    """This process's account of a batch: outcomes in input order, slides put back because
    another process held their lock, and what each finished or failed slide leaves for the
    cohort report. Whichever runner processes the slides, outcomes go through :meth:`finish`."""

    def __init__(self, slides: Sequence[Path], out: Path, events: BatchEvents | None = None) -> None:
        self.order = {str(s): i for i, s in enumerate(slides)}
        self.out = out
        self.outcomes: list[SlideOutcome] = []
        self.holders: dict[str, str] = {}
        self.events = events or BatchEvents()

    def defer(self, slide: Path, outcome: SlideOutcome) -> None:
        """A slide whose lock another live process holds: come back to it at the end."""
        log.warning("%s: %s; coming back to it at the end", slide, outcome.detail)
        self.holders[str(slide)] = outcome.holder

    def finish(self, outcome: SlideOutcome) -> None:
        from tseg.runtime.cohort.report import record_outcome

        who = self.holders.get(outcome.slide)
        if who and outcome.status == "skipped":
            outcome.detail = f"finished by {who}, which held its lock ({outcome.detail})"
        elif who and outcome.status in ("done", "postprocessed"):
            outcome.detail = f"{who} held its lock but did not finish it; processed here" + (
                f" ({outcome.detail})" if outcome.detail else "")
        self.outcomes.append(outcome)
        try:
            record_outcome(self.out, outcome)
        except (TsegError, OSError) as exc:  # the report loses a line; the batch goes on
            log.warning("could not record the outcome of %s for the cohort report: %s", outcome.slide, exc)
        self.events.slide_done(outcome)

    def finished(self) -> set[str]:
        return {o.slide for o in self.outcomes}

    def sorted(self) -> list[SlideOutcome]:
        return sorted(self.outcomes, key=lambda o: self.order.get(o.slide, len(self.order)))

    def interrupted(self, slides: Sequence[Path], in_progress: Sequence[str],
                    cause: BaseException | None = None) -> BatchInterrupted:
        """What to raise after Ctrl-C or SIGTERM (``cause``: the KeyboardInterrupt caught)."""
        done = self.finished()
        left = [str(s) for s in slides if str(s) not in done and str(s) not in in_progress]
        signum = signal_of(cause) if cause is not None else signal.SIGINT
        return BatchInterrupted(self.sorted(), list(in_progress), left, signum)
