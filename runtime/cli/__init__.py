"""The ``tseg-rt`` command line: thin typer commands over the library."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``tseg-rt`` script (imports the commands only when run)."""
    from tseg.runtime.cli.main import main as run_main

    run_main()
