"""What every command of the command line shares: logging, exit statuses, errors as messages.

Only the command line turns a :class:`~tseg.runtime.errors.TsegError` into a one-line message
and a non-zero exit status (:data:`EXIT_CODES`); the library never exits.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn, Optional

import typer

from tseg.runtime.util.display import printable

from tseg.runtime.util.signals import EXIT_INTERRUPTED, EXIT_TERMINATED

EXIT_OK = 0
EXIT_FAILED_SLIDES = 1
EXIT_ERROR = 2
EXIT_NOT_FINISHED = 3
# EXIT_INTERRUPTED = 130 and EXIT_TERMINATED = 143: 128 + the signal, as a shell reports it
#: The documented exit statuses (docs/slides.md, *Exit status*); tests/runtime/test_public_api.py lists them.
EXIT_CODES = {
    EXIT_OK: "everything asked for was done",
    EXIT_FAILED_SLIDES: "some slides (or result folders) failed; the others were processed",
    EXIT_ERROR: "bad options, models or output folders: stopped before any slide was read",
    EXIT_NOT_FINISHED: "`report` of a cohort: none failed, but some slides were not run or are still running",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); nothing was left half-written",
    EXIT_TERMINATED: "terminated (SIGTERM: scancel, a time limit, preemption); nothing was left half-written",
}


class _PrintableRecords(logging.Filter):
    """Log lines through :func:`printable` (names in messages come from folders)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = printable(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _OwnRecords(logging.Filter):
    """Without ``-v``, only tseg-rt's own records: a library's log line (tifffile's "invalid page
    offset") would come ahead of, and say less than, tseg-rt's own message about the same file.
    uvicorn's records pass: it is ``serve``'s own server (a port in use is its error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in ("tseg", "uvicorn")


def setup_logging(verbose: int) -> None:
    """Rich log lines on a terminal; plain unwrapped lines in files and pipes (one format for
    this process and its workers, whose records come through the batch's log queue). Libraries'
    loggers are shown with ``-v`` only; progress lines (not on a terminal) always."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "[%(asctime)s] %(levelname)s %(message)s"
    handler.addFilter(_PrintableRecords())
    if verbose <= 0:
        handler.addFilter(_OwnRecords())
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]" if console.is_terminal else "%X",
                        handlers=[handler], force=True)
    logging.getLogger("tseg.runtime.cohort.progress").setLevel(min(level, logging.INFO))


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a TsegError into its one-line message and exit status 2, and Ctrl-C (SIGTERM) into
    a line that says what stopped and exit status 130 (143)."""
    from tseg.runtime.errors import TsegError
    from tseg.runtime.util.signals import describe_signal, exit_status

    try:
        yield
    except TsegError as exc:
        fail(exc.cli_message())
    except KeyboardInterrupt as stop:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        fail(f"{describe_signal(stop)}: `tseg-rt {command}` stopped before it finished; nothing was left "
             "half-written. Run it again to finish.", exit_status(stop))


def mpp_option(mpp: Optional[str]) -> float | tuple[float, float] | None:
    """``--mpp X`` or ``X,Y`` checked (exit 2 with the reason), or None when not given."""
    if mpp is None:
        return None
    from tseg.runtime.errors import TsegError
    from tseg.runtime.wsi.mpp import parse_mpp

    try:
        return parse_mpp(mpp, "--mpp")
    except TsegError as exc:
        fail(str(exc))


def devices_option(devices: Optional[str]) -> list[int]:
    """``--devices 0,1`` as GPU indices (exit 2 when they are not integers)."""
    if not devices:
        return []
    try:
        return [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        fail(f"--devices takes GPU indices like 0,1,2, got {devices!r}")


def need_torch(extra: str = "train") -> None:
    """Exit 2 saying which extra to install when PyTorch is missing."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        fail(f"this command needs PyTorch: pip install 'tseg-rt[{extra}]'")


def num(value: Optional[float], digits: int = 3) -> str:
    """A number for a one-line summary, ``n/a`` when undefined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def csv_progress(console: Any) -> Callable[[Any], None]:
    """A slides CSV's reading progress (:class:`~tseg.runtime.cohort.slides_csv.CsvProgress`) as
    plain lines on ``console`` (stderr): a list of millions of rows takes minutes to read."""
    from rich.markup import escape

    def say(progress: Any) -> None:
        console.print(escape(printable(progress.describe())), highlight=False, soft_wrap=True)

    return say
