"""The ASGI application: FastAPI over :class:`~tseg.runtime.service.core.Service`.

FastAPI (on Starlette) because it derives the OpenAPI schema and strict request validation from
the same pydantic models (:mod:`~tseg.runtime.service.schemas`), so the published schema cannot
drift from what the service accepts; served by uvicorn (:mod:`~tseg.runtime.service.server`).

The API is versioned in its paths (``/v1/...``); ``/metrics`` stays where Prometheus looks. The
schema is at ``/v1/openapi.json`` (behind the same access checks as every route; in the
repository at ``docs/openapi.json``); the interactive documentation pages are off because they
load scripts from a CDN.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tseg.runtime.service.access import Access
from tseg.runtime.service.problems import problem_body
from tseg.runtime.service.routers import health, jobs, metrics, results, viewer

MAX_BODY_BYTES = 64 * 1024
TITLE = "tseg-rt service"
DESCRIPTION = ("Tumour segmentation of whole-slide images on a local machine: submit a slide by path, follow "
               "its job, fetch its results. Errors are application/problem+json (RFC 9457) with a stable `code`.")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared or streamed), before any
    route reads them. Bodies are small JSON objects, so the accepted ones are buffered."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, send: Send) -> None:
        import json

        body = json.dumps(problem_body("body_too_large", f"the request body is over {self.limit} bytes; a job "
                                                         "submission is a small JSON object", scope.get("path", ""))
                          ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

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
                await self._refuse(scope, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(service: Any = None, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               lifespan: Any = None) -> FastAPI:
    """The application for ``service`` (None: for the schema only); ``lifespan`` starts and stops it."""
    from tseg.runtime.service.problems import install
    from tseg.runtime.service.routers.health import API_VERSION

    app = FastAPI(title=TITLE, description=DESCRIPTION, version=API_VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None, dependencies=[Depends(Access(token))], lifespan=lifespan)
    app.state.service = service
    for router in (jobs.router, results.router, viewer.router, health.router, metrics.router):
        app.include_router(router)
    install(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with what it cannot know: every error is problem+json (its default
    422 model is not what the service sends), every route may answer 401/403 (the access
    dependency), and bearer tokens are the security scheme."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Invalid request", "content": problem}
            responses.setdefault("401", {"description": "Missing or wrong token (services started with --token-file)",
                                         "content": problem})
            responses.setdefault("403", {"description": "Host or Origin not allowed", "content": problem})
            for code, response in responses.items():
                if code[0] in "45" and "content" in response and "application/json" in response["content"]:
                    response["content"] = problem
            operation["security"] = [{"bearer": []}, {}]
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description": (
        "The token of the service's --token-file; required when it was started with one.")}}
    return doc


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document (what ``docs/openapi.json`` holds)."""
    return create_app().openapi()
