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

from fastapi import FastAPI

from tseg.runtime.service.access import Access
from tseg.runtime.service.middleware import (MAX_BODY_BYTES, MAX_REQUESTS, AccessGuard, BodyLimit, ProblemsOnly,
                                             RequestLimit)
from tseg.runtime.service.routers import health, jobs, metrics, results, viewer

TITLE = "tseg-rt service"
DESCRIPTION = ("Tumour segmentation of whole-slide images on a local machine: submit a slide by path, follow "
               "its job, fetch its results. Errors are application/problem+json (RFC 9457) with a stable `code`.")


def create_app(service: Any = None, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               lifespan: Any = None, max_requests: int = MAX_REQUESTS) -> FastAPI:
    """The application for ``service`` (None: for the schema only); ``lifespan`` starts and stops it.
    Every request passes :mod:`~tseg.runtime.service.middleware` first (access checks before
    routing, the body limits, the request limit; every error as problem+json)."""
    from tseg.runtime.service.problems import install
    from tseg.runtime.service.routers.health import API_VERSION

    app = FastAPI(title=TITLE, description=DESCRIPTION, version=API_VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.service = service
    for router in (jobs.router, results.router, viewer.router, health.router, metrics.router):
        app.include_router(router)
    install(app)
    app.add_middleware(BodyLimit, limit=max_body_bytes)  # added last = outermost: the order below is inside out
    app.add_middleware(AccessGuard, access=Access(token))
    app.add_middleware(RequestLimit, limit=max_requests)
    app.add_middleware(ProblemsOnly)

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
