"""What every request passes before (and every error after) a route: pure ASGI middleware.

From the outside in (:func:`~tseg.runtime.service.app.create_app` installs them):

* :class:`ProblemsOnly` — an error response that is not JSON (Starlette's own text/plain answers
  to ``Range: bytes=abc`` or an unsatisfiable range) becomes problem+json, with a stable code;
* :class:`RequestLimit` — at most ``limit`` requests in progress; more get 503 problem+json with
  ``Retry-After`` (idle connections hold no request, so they cannot lock clients out);
* :class:`AccessGuard` — the token, Host and Origin checks (:class:`~tseg.runtime.service.access.Access`)
  before routing, so an unknown path or method answers 401 like every other without the token,
  and nobody learns the routes;
* :class:`BodyLimit` — bodies over ``limit`` bytes (413), bodies that do not arrive within
  ``timeout_s`` (408), and JSON objects with a duplicate key (400 ``invalid_json``: the last would
  silently win, ``{"path": "/etc/passwd", "path": "<inside>"}``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tseg.runtime.service.problems import MEDIA_TYPE, PROBLEMS, Problem, problem_body

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 30.0
MAX_REQUESTS = 256
#: Codes for error statuses a route did not answer itself.
STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden_host", 404: "not_found",
                405: "method_not_allowed", 408: "request_timeout", 413: "body_too_large",
                415: "unsupported_media_type", 416: "range_not_satisfiable", 503: "busy"}


async def send_problem(send: Send, scope: Scope, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer with problem+json (the connection is closed afterwards when the body was not read)."""
    body = json.dumps(problem_body(code, detail, scope.get("path", ""))).encode()
    raw = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": PROBLEMS.get(code, (500, ""))[0], "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ProblemsOnly:
    """Turn an error response that is not problem+json into one (see the module docstring)."""

    KEPT = (b"content-range", b"retry-after", b"www-authenticate", b"allow")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        text = bytearray()

        async def guard(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = dict(message.get("headers") or [])
                if b"json" not in headers.get(b"content-type", b""):  # JSON answers are the routes' own
                    held["start"] = message
                    held["headers"] = {k.decode(): v.decode() for k, v in headers.items() if k in self.KEPT}
                    return
            if "start" in held and message["type"] == "http.response.body":
                text.extend(message.get("body", b"")[: 1000 - len(text)])
                if not message.get("more_body", False):
                    await self._replace(scope, send, held, bytes(text))
                return
            await send(message)

        await self.app(scope, receive, guard)

    @staticmethod
    async def _replace(scope: Scope, send: Send, held: dict[str, Any], text: bytes) -> None:
        status = held["start"]["status"]
        has_range = any(k == b"range" for k, _ in scope.get("headers") or [])
        code = "invalid_range" if status == 400 and has_range else STATUS_CODES.get(
            status, "internal_error" if status >= 500 else "invalid_request")
        detail = text.decode("utf-8", "replace").strip() or PROBLEMS.get(code, (0, "error"))[1]
        if code == "range_not_satisfiable":
            detail = f"the requested range is outside the file ({held['headers'].get('content-range', '')})"
        elif code == "invalid_range":
            detail = f"the Range header is not a valid byte range: {detail}"
        await send_problem(send, scope, code, detail, held["headers"])


class RequestLimit:
    """At most ``limit`` requests in progress at once (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUESTS) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await send_problem(send, scope, "busy", f"{self.limit} requests are in progress; try again shortly",
                               {"Retry-After": "1"})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class AccessGuard:
    """Run ``access`` (an :class:`~tseg.runtime.service.access.Access`) before routing."""

    def __init__(self, app: ASGIApp, access: Any) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self.access(Request(scope))
            except Problem as problem:
                await send_problem(send, scope, problem.code, problem.detail, problem.headers)
                return
        await self.app(scope, receive, send)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object; send each key once")
        seen[key] = value
    return seen


def duplicate_key(body: bytes) -> str | None:
    """Why a JSON body has a key twice in one object, or None (also for bodies that are not JSON:
    the route's own parser says what is wrong with those)."""
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        return str(exc) if "appears twice" in str(exc) else None
    except RecursionError:
        return None
    return None


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared or streamed), bodies slower
    than ``timeout_s`` with 408 and JSON bodies with a duplicate key with 400, before any route
    reads them. Bodies are small JSON objects, so the accepted ones are buffered."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await send_problem(send, scope, "body_too_large", f"the request body is over {self.limit} bytes; a job "
                                                          "submission is a small JSON object", {"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                await self._too_large(scope, send)
                return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await send_problem(send, scope, "request_timeout", f"the request body did not arrive within "
                                                                   f"{self.timeout_s:g} s", {"Connection": "close"})
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json":
            why = duplicate_key(body)
            if why is not None:
                await send_problem(send, scope, "invalid_json", f"the request body is not valid JSON for this API: "
                                                                f"{why}")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
