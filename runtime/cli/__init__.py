"""The ``tseg-rt`` command line: thin typer commands over the library."""

from __future__ import annotations

from typing import Any


def main() -> None:
    """Entry point of the ``tseg-rt`` script (imports the commands only when run)."""
    from tseg.runtime.cli.main import main as run_main

    run_main()


def __getattr__(name: str) -> Any:
    """The old module ``tseg.runtime.cli``'s names, deprecated (see :mod:`tseg.runtime.compat`)."""
    from tseg.runtime.compat import forward

    return forward(__name__, name)
