"""SIGTERM handled like Ctrl-C, for batch schedulers.

Slurm (``scancel``, a time limit, preemption), Kubernetes and systemd stop a job with SIGTERM,
then SIGKILL after a grace period (Slurm's ``KillWait``, 30 s by default). Python's default for
SIGTERM is to die at once, skipping every ``finally``: a slide's temporary folder and lock file
stay behind until the next run, and the grace period is wasted. :func:`terminate_as_interrupt`
turns SIGTERM into :class:`Terminated`, a :class:`KeyboardInterrupt`, so the code that already
cleans up after Ctrl-C (partial outputs removed, locks released, a message naming the slide)
runs for SIGTERM too; the exit status is then ``128 + 15 = 143``, as a shell reports a process
killed by SIGTERM.

Only the first SIGTERM raises: later ones (a scheduler that signals every process of the job,
then the job script forwarding the same signal) are logged and ignored, so the clean-up they
would interrupt finishes. A worker process (:func:`stop_once` for both signals) gets SIGTERM from
the scheduler and SIGINT from its main process passing the stop on: the first of the two raises,
the other is ignored. The handlers are installed by the command line and its worker processes,
never by the library: an application embedding tseg-rt keeps its own.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: Exit status of a command stopped by SIGINT (Ctrl-C) or SIGTERM: 128 + the signal's number.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as after Ctrl-C (every ``except KeyboardInterrupt`` cleans up)."""

    signum = signal.SIGTERM


def signal_of(exc: BaseException) -> int:
    """The signal that stopped a command: SIGTERM for :class:`Terminated` (or an exception that
    records ``signum``), SIGINT for any other KeyboardInterrupt."""
    return int(getattr(exc, "signum", signal.SIGINT))


def exit_status(exc: BaseException) -> int:
    """``128 + signal``: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + signal_of(exc)


def describe_signal(exc: BaseException) -> str:
    """``"interrupted"`` (Ctrl-C) or ``"terminated (SIGTERM: scancel, a time limit or preemption)"``."""
    if signal_of(exc) == signal.SIGTERM:
        return "terminated (SIGTERM: scancel, a time limit, preemption or a shutdown)"
    return "interrupted"


class _Deferral:
    """Whether the main thread is in a block where a stop must wait (:func:`stops_deferred`),
    and the stop that arrived meanwhile. One per process: signal handlers are per process."""

    depth = 0
    pending: BaseException | None = None


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Within the block, a stop of :func:`stop_once` is raised at its end, not inside it. For
    code that an exception must not cut in two, such as starting a thread: raised inside
    ``Thread.start``'s lock handling it leaves that lock broken ("release unlocked lock") and the
    stop ends in a traceback instead of the clean-up. Elsewhere than the main thread it does
    nothing (signals are handled in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if _Deferral.depth == 0 and _Deferral.pending is not None:
            stop, _Deferral.pending = _Deferral.pending, None
            raise stop


def stop_once(signums: tuple[int, ...] = (signal.SIGTERM,)) -> dict[int, Any]:
    """Make the first of ``signums`` raise in the main thread (SIGTERM: :class:`Terminated`,
    SIGINT: KeyboardInterrupt; at the end of a :func:`stops_deferred` block when it arrives in
    one) and ignore the rest; returns the previous handlers. Call only in the main thread of a
    process that owns its signals (a command, a worker process)."""
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if raised:
            log.warning("%s again: already stopping (removing partial outputs)", signal.Signals(signum).name)
            return
        raised = True
        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if _Deferral.depth:
            _Deferral.pending = stop
            return
        raise stop

    return {s: signal.signal(s, handler) for s in signums}


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (see the module docstring); the
    previous handler is restored afterwards. Outside the main thread it does nothing (Python
    delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = stop_once((signal.SIGTERM,))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[signal.SIGTERM])
