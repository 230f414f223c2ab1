"""What every command module shares: logging, one-line errors and exit statuses, option parsing,
and the per-slide options (``--mpp``, ``--low``, ...) as typer declarations derived from
:class:`tseg.runtime.cohort.options.SlideOptions`, so ``serve`` and ``watch`` take the same
per-slide options with the same help texts.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer

from tseg.runtime.cohort.options import SlideOptions

EXIT_FAILED_SLIDES = 1
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


def parse_mpp_option(mpp: Optional[str]):  # noqa: ANN202
    if mpp is None:
        return None
    from tseg.runtime.cohort.options import parse_mpp
    from tseg.runtime.errors import TsegError

    try:
        return parse_mpp(mpp, "--mpp")
    except TsegError as exc:
        fail(str(exc))
    return None


def parse_devices(devices: Optional[str]) -> list[int]:
    if not devices:
        return []
    try:
        return [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        fail(f"--devices takes GPU indices like 0,1,2, got {devices!r}")
    return []


def _help(name: str) -> str:
    meta = next(f for f in SlideOptions.describe_fields() if f["name"] == name)
    return str(meta["help"]).replace("[X, Y]", "X,Y")


# Per-slide options: the defaults of every job (a client or a slides CSV may override them).
MppOption = Annotated[Optional[str], typer.Option("--mpp", help=_help("mpp"), rich_help_panel="Per-slide options")]
LowOption = Annotated[Optional[int], typer.Option("--low", min=0, max=255, help=_help("low"),
                                                  rich_help_panel="Per-slide options")]
HighOption = Annotated[Optional[int], typer.Option("--high", min=0, max=255, help=_help("high"),
                                                   rich_help_panel="Per-slide options")]
PruneOption = Annotated[bool, typer.Option("--prune/--no-prune", help=_help("prune"),
                                           rich_help_panel="Per-slide options")]
LevelToleranceOption = Annotated[float, typer.Option("--level-tolerance", min=0.0, max=50.0,
                                                     help=_help("level_tolerance"), rich_help_panel="Per-slide options")]
DctScalingOption = Annotated[bool, typer.Option("--dct-scaling", help=_help("dct_scaling"),
                                                rich_help_panel="Per-slide options")]


def slide_options(mpp: Optional[str], low: Optional[int], high: Optional[int], prune: bool, level_tolerance: float,
                  dct_scaling: bool) -> SlideOptions:
    """The per-slide options of the command line, checked (exit 2 with the reason otherwise)."""
    from tseg.runtime.errors import TsegError
    from tseg.runtime.method.postprocess import check_thresholds

    try:
        options = SlideOptions(mpp=parse_mpp_option(mpp), low=low, high=high, prune=prune,
                               level_tolerance=level_tolerance, dct_scaling=dct_scaling).checked()
        if low is not None or high is not None:
            check_thresholds(low if low is not None else 0, high if high is not None else 255)
    except TsegError as exc:
        fail(exc.cli_message())
        raise  # not reached: fail() exits
    return options
