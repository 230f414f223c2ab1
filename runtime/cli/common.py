"""What every ``tseg-rt`` command module shares: logging set-up and turning errors into exit codes."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import typer

EXIT_ERROR = 2


def setup_logging(verbose: int) -> None:
    """Rich log lines on a terminal; plain unwrapped lines in files and pipes (one format for
    this process and its workers, whose records come through the batch's log queue)."""
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
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]" if console.is_terminal else "%X",
                        handlers=[handler], force=True)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    from rich.console import Console

    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a TsegError into its one-line message and exit status 2, and Ctrl-C into a line
    that says what stopped and exit status 130."""
    from tseg.runtime.errors import TsegError

    try:
        yield
    except TsegError as exc:
        fail(exc.cli_message())
    except KeyboardInterrupt:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        fail(f"interrupted: `tseg-rt {command}` stopped before it finished; nothing was left half-written. "
             "Run it again to finish.", 130)
