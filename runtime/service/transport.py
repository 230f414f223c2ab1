"""The connection level under the application: uvicorn's HTTP/1.1 protocol (h11) and server, with
what a service on a shared machine needs from them.

* **Deadlines.** A connection must send a request's head (request line and headers) within
  :data:`HEADER_TIMEOUT_S` of connecting or of its first byte after a response; between requests
  it may stay idle for :data:`KEEP_ALIVE_S` (uvicorn's ``timeout_keep_alive``); a body must arrive
  within 30 s (:class:`~tseg.runtime.service.middleware.BodyLimit`). So a
  socket that sends nothing, or sends a byte at a time, is closed within a minute.
* **No connection limit idle sockets could hold.** uvicorn's ``limit_concurrency`` counts
  connections, idle ones too: 512 idle sockets locked every client out. The service limits
  requests in progress instead (:class:`~tseg.runtime.service.middleware.RequestLimit`), and idle
  sockets are closed by the deadlines.
* **Every error is problem+json**, also a request h11 cannot parse (a bad ``Content-Length``).
* **A stop begins at SIGTERM.** :class:`ServiceServer` calls ``on_stop`` from the signal (running
  jobs stop at their next tile and go back to the queue, long polls answer at once, nothing new
  starts) before uvicorn waits for open connections; a requested stop (SIGTERM) ends the process
  normally (exit status 0), Ctrl-C still as interrupted (130).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tseg.runtime.service.problems import MEDIA_TYPE, problem_body

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
#: The largest request head h11 buffers (uvicorn's ``h11_max_incomplete_event_size``).
MAX_HEAD_BYTES = 16 * 1024


def raw_problem(status: int, reason: str, code: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection (for the protocol
    level, where no ASGI response exists)."""
    body = json.dumps(problem_body(code, detail)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and problem+json for a
    request it cannot parse (see the module docstring)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        self.transport.write(raw_problem(408, "Request Timeout", "request_timeout", (
            f"no complete request head within {self.header_timeout_s:g} s; the connection is closed")))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None or self.cycle.response_complete:
            self._arm()  # a head is (or will be) on its way: it has its deadline, not reset by each byte
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # idle until the next request: uvicorn's keep-alive timeout applies
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(raw_problem(400, "Bad Request", "invalid_request", f"not a valid HTTP request: {msg}"))
        self.transport.close()


class ServiceServer(uvicorn.Server):
    """uvicorn's server, whose stop begins at the signal (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._stop_begun = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            self._captured_signals.append(sig)  # Ctrl-C: uvicorn raises it again afterwards (exit 130)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        if not self._stop_begun:
            self._stop_begun = True
            # In a thread: a signal handler must not wait for locks the interrupted code may hold.
            threading.Thread(target=self._on_stop, name="tseg-stop", daemon=True).start()


def config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration for the service: the guarded protocol and its deadlines."""
    return uvicorn.Config(app, http=GuardedH11Protocol, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES, limit_concurrency=None, **kwargs)
