"""Running a service: ``tseg-rt serve`` (HTTP, with uvicorn) and ``tseg-rt watch`` (hot folders).

:func:`serve` binds the socket itself (so ``port=0`` picks a free port, and the address actually
bound is written to ``OUT/.tseg-service/service.json`` for clients and tests), then runs uvicorn.
The service starts in the application's startup (engines load in the background: live at once,
ready when warmed up). On SIGTERM (``systemctl stop``) or Ctrl-C the stop begins at once
(:class:`~tseg.runtime.service.transport.ServiceServer`): nothing new starts, running jobs stop at
their next tile and go back to ``pending``, long polls are answered with the job's state; uvicorn
then finishes the requests in flight, and the application's shutdown writes the report once more
and releases the results folder. A SIGTERM stop returns normally (exit status 0). If no device
can load the engine the service stops and :func:`serve` raises the reason (exit status 2).

:func:`watch` runs the same service without HTTP: the runner and the hot folders, until SIGINT or
SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from typing import Any, AsyncIterator, Callable

from tseg.runtime.errors import InvalidArgumentError, ModelError
from tseg.runtime.service.core import Service, ServiceConfig

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 from ``host``); InvalidArgumentError if taken.

    The protocol must be named (``IPPROTO_TCP``, not 0): asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on connections of sockets that say so, and without it every response
    waits ~40 ms for the client's delayed acknowledgement."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another process on that "
                                   "port? choose another --port)") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}"


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8642, token: str | None = None,
          on_listening: Callable[[str], None] | None = None) -> None:
    """Serve the HTTP API until SIGTERM/SIGINT (see the module docstring)."""
    from contextlib import asynccontextmanager

    from tseg.runtime.service.access import RedactSecrets, check_binding
    from tseg.runtime.service.app import create_app
    from tseg.runtime.service.transport import ServiceServer
    from tseg.runtime.service.transport import config as transport_config
    from tseg.runtime.service.viewer.app import bundled_model_sha256, create_viewer_app
    from tseg.runtime.service.viewer.library import Library

    check_binding(host, token)
    sock = bind(host, port)
    try:
        service = Service(config, "serve")
    except BaseException:
        sock.close()
        raise
    actual_port = sock.getsockname()[1]
    url = _url(host, actual_port)
    server: Any = None

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        service.start()
        service.write_service_file(url, host, actual_port)
        log.info("tseg-rt serve: listening on %s (results in %s; roots %s)", url, service.out,
                 service.roots.describe())
        if on_listening is not None:
            on_listening(url)
        try:
            yield
        finally:
            if not service.stopping.is_set():
                log.info("tseg-rt serve: stopping (running jobs go back to the queue)")
            service.stop()
            viewer.close()

    def fatal(message: str) -> None:
        if server is not None:
            server.should_exit = True

    def begin_stop() -> None:
        log.info("tseg-rt serve: stopping (running jobs go back to the queue)")
        service.begin_stop()

    service.on_fatal(fatal)
    app = create_app(service, token, lifespan=lifespan)
    viewer = Library(service.out)  # the viewer of the service's results (`GET /v1/jobs/{id}/viewer`)
    app.mount("/viewer", create_viewer_app(viewer, token, bundled_model_sha256()))
    server = ServiceServer(transport_config(app, log_config=None, access_log=True, server_header=False,
                                            proxy_headers=False, lifespan="on", timeout_graceful_shutdown=30),
                           on_stop=begin_stop)
    access_log, redact = logging.getLogger("uvicorn.access"), RedactSecrets()
    access_log.addFilter(redact)
    try:
        server.run(sockets=[sock])
    finally:
        access_log.removeFilter(redact)
        sock.close()
    if service.fatal:
        raise ModelError(None, f"the service stopped: {service.fatal}")


def watch(config: ServiceConfig, stop: threading.Event | None = None,
          on_started: Callable[[Service], None] | None = None) -> None:
    """Process the hot folders of ``config`` until SIGINT/SIGTERM (or ``stop`` is set)."""
    if not config.hot_folders:
        raise InvalidArgumentError("give a folder to watch")
    stop = stop or threading.Event()
    service = Service(config, "watch")
    service.on_fatal(lambda message: stop.set())
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with service:
            log.info("tseg-rt watch: %s -> %s", ", ".join(str(h.folder) for h in config.hot_folders), service.out)
            if on_started is not None:
                on_started(service)
            stop.wait()
            log.info("tseg-rt watch: stopping (running jobs go back to the queue)")
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
    if service.fatal:
        raise ModelError(None, f"the service stopped: {service.fatal}")
