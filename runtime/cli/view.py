"""``tseg-rt view``: the local slide viewer over a results folder (calls
:func:`tseg.runtime.service.viewer.server.view`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tseg.runtime.cli.common import reported, setup_logging
from tseg.runtime.cli.options import Verbose


def view(
    results: Annotated[Path, typer.Argument(help="Results folder (as written by `tseg-rt run`).")] = Path("results"),
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port; the URL is printed).")] = 8643,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="File whose first line is the token every "
                                                                            "request must send as 'Authorization: Bearer TOKEN'.")] = None,
    cache_mb: Annotated[int, typer.Option(min=1, help="Memory for tiles kept for reuse (MB).")] = 256,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the viewer in the web browser.")] = False,
    verbose: Verbose = 0,
) -> None:
    """View slides with the tumour overlay in the browser, and record a verdict per slide (see docs/viewer.md)."""
    setup_logging(verbose + 1)

    def listening(url: str) -> None:
        typer.echo(f"tseg-rt view: {url}")  # the one line a user (or a script) needs
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    with reported():
        from tseg.runtime.service.access import read_token_file
        from tseg.runtime.service.viewer.server import view as run_viewer

        token = read_token_file(token_file) if token_file is not None else None
        run_viewer(results, host=host, port=port, token=token, cache_mb=cache_mb, on_listening=listening)
    sys.stdout.flush()
    logging.shutdown()
