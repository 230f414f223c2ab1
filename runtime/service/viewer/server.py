"""Running the viewer: uvicorn on a socket bound first (``port=0`` picks a free port), until
SIGTERM or Ctrl-C; the URL is passed to ``on_listening`` (the command prints it)."""

from __future__ import annotations

import logging
import os
from typing import Any, AsyncIterator, Callable

from tseg.runtime.service.access import check_binding
from tseg.runtime.service.server import bind
from tseg.runtime.service.viewer.library import Library

log = logging.getLogger(__name__)


def view(results: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8643, token: str | None = None,
         cache_mb: int = 256, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve the viewer over ``results`` until SIGTERM/SIGINT."""
    from contextlib import asynccontextmanager

    import uvicorn

    from tseg.runtime.service.transport import config as transport_config
    from tseg.runtime.service.viewer.app import bundled_model_sha256, create_viewer_app

    check_binding(host, token)
    library = Library(results, cache_bytes=cache_mb * 1024 * 1024)
    sock = bind(host, port)
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        log.info("tseg-rt view: %s (results in %s)", url, library.root)
        if on_listening is not None:
            on_listening(url)
        try:
            yield
        finally:
            library.close()

    app = create_viewer_app(library, token, bundled_model_sha256())
    app.router.lifespan_context = lifespan
    # serve's transport: deadlines for idle and slow connections, no connection limit that idle
    # sockets could hold (the request limit is the middleware's).
    server = uvicorn.Server(transport_config(app, log_config=None, access_log=False, server_header=False,
                                             proxy_headers=False, lifespan="on", timeout_graceful_shutdown=10))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
