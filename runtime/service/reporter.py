"""Keeps the cohort report (``cohort.csv``, ``report.html``) of a service's results folder current.

``tseg-rt run`` writes the report at the end of a batch; a service never ends, so it writes it
when its queue has drained after jobs finished, at most once per ``min_interval_s`` (the report
reads every result folder, which takes a while for large cohorts), and once more on stop if jobs
finished since. The report is the same :func:`tseg.runtime.cohort.report.write_report` that
``tseg-rt report`` writes; a report that cannot be written is logged, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from tseg.runtime.errors import TsegError

log = logging.getLogger(__name__)


class ReportWriter(threading.Thread):
    """Writes the report when ``idle()`` after :meth:`poke` (see the module docstring)."""

    def __init__(self, out: Path, idle: Callable[[], bool], min_interval_s: float = 30.0,
                 check_s: float = 1.0) -> None:
        super().__init__(name="tseg-report", daemon=True)
        self.out = Path(out)
        self.idle = idle
        self.min_interval_s = min_interval_s
        self.check_s = check_s
        self._due = threading.Event()
        self._halt = threading.Event()
        self._last = 0.0
        self.written = 0

    def poke(self) -> None:
        """A job finished: the report is out of date."""
        self._due.set()

    def write_now(self) -> None:
        from tseg.runtime.cohort.report import write_report

        self._due.clear()
        self._last = time.monotonic()
        try:
            made = write_report(self.out)
            self.written += 1
            log.info("cohort report: %s (%d slide(s))", made.html, made.totals["slides"])
        except (TsegError, OSError) as exc:
            log.warning("no cohort report: %s", exc)

    def run(self) -> None:
        while not self._halt.is_set():
            if self._due.wait(self.check_s) and not self._halt.is_set():
                if self.idle() and time.monotonic() - self._last >= self.min_interval_s:
                    self.write_now()
                else:
                    self._halt.wait(self.check_s)

    def stop(self) -> None:
        """Stop, writing the report once more if jobs finished since the last one."""
        self._halt.set()
        if self.ident is not None:
            self.join(30)
        if self._due.is_set():
            self.write_now()
