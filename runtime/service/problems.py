"""Errors as RFC 9457 (formerly 7807) problem details: ``application/problem+json``.

Every error response of the service is one JSON object::

    {"type": "urn:tseg-rt:problem:outside_roots", "title": "Path outside the roots", "status": 403,
     "detail": "/etc/passwd is outside the service's roots (/data/slides); ...",
     "instance": "/v1/jobs", "code": "outside_roots"}

``code`` is stable (clients switch on it); ``detail`` is for people. Request validation errors add
``errors``: ``[{"location": "body.options.low", "message": ..., "type": ...}]``. Library errors map
to statuses here, so routes only call the service and let its exceptions through.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tseg.runtime.errors import InvalidArgumentError, OutputError, TsegError
from tseg.runtime.service.core import JobConflict, JobNotFound, ResultFileNotFound, ResultGone
from tseg.runtime.service.paths import PathRefused
from tseg.runtime.service.store import IdempotencyConflict, QueueFull
from tseg.runtime.util.display import printable

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:tseg-rt:problem:"

#: code -> (HTTP status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "The body is not valid JSON"),
    "invalid_range": (400, "Invalid Range header"),
    "bad_path": (400, "Bad slide path"),
    "bad_tile": (400, "Bad tile address"),
    "path_traversal": (400, "'..' in a slide path"),
    "unauthorized": (401, "Missing or wrong token"),
    "outside_roots": (403, "Path outside the roots"),
    "in_results": (403, "Path inside the results folder"),
    "forbidden_origin": (403, "Cross-origin request refused"),
    "forbidden_host": (403, "Host not allowed"),
    "not_found": (404, "Not found"),
    "job_not_found": (404, "No such job"),
    "result_not_found": (404, "No such result file"),
    "method_not_allowed": (405, "Method not allowed"),
    "request_timeout": (408, "Request too slow"),
    "conflict": (409, "Conflict with the job's state"),
    "gone": (410, "Result no longer available"),
    "body_too_large": (413, "Request body too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "range_not_satisfiable": (416, "Range not satisfiable"),
    "invalid_request": (422, "Invalid request"),
    "invalid_options": (422, "Invalid options"),
    "invalid_review": (422, "Invalid verdict"),
    "not_a_slide": (422, "Not a slide"),
    "not_readable": (422, "The service cannot read this path"),
    "idempotency_key_reused": (422, "Idempotency key used for another request"),
    "queue_full": (429, "Too many queued jobs"),
    "not_ready": (503, "Not ready"),
    "busy": (503, "Too many requests in progress"),
    "store_unavailable": (503, "Job store unavailable"),
    "internal_error": (500, "Internal error"),
}
_STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden_host", 404: "not_found",
                 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


class Problem(Exception):
    """An error the HTTP layer itself raises (authentication, media types)."""

    def __init__(self, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(detail)


def problem_body(code: str, detail: str, instance: str = "", **extra: Any) -> dict[str, Any]:
    status, title = PROBLEMS.get(code, (500, "Error"))
    body = {"type": TYPE_PREFIX + code, "title": title, "status": status, "detail": printable(detail),
            "instance": printable(instance), "code": code}
    body.update(extra)
    return body


def problem_response(code: str, detail: str, instance: str = "", headers: Mapping[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = problem_body(code, detail, instance, **extra)
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=dict(headers or {}))


def code_for(exc: TsegError) -> str:
    """The problem code of a library error."""
    if isinstance(exc, PathRefused):
        return exc.code if exc.code in PROBLEMS else "bad_path"
    if isinstance(exc, JobNotFound):
        return "job_not_found"
    if isinstance(exc, ResultFileNotFound):
        return "result_not_found"
    if isinstance(exc, JobConflict):
        return "conflict"
    if isinstance(exc, ResultGone):
        return "gone"
    if isinstance(exc, QueueFull):
        return "queue_full"
    if isinstance(exc, IdempotencyConflict):
        return "idempotency_key_reused"
    if isinstance(exc, InvalidArgumentError):
        return "invalid_options"
    if isinstance(exc, OutputError):
        return "store_unavailable"
    return "internal_error"


def _location(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if isinstance(loc, (list, tuple)) else str(loc)


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem+json response."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.code, exc.detail, request.url.path, exc.headers)

    @app.exception_handler(TsegError)
    async def _library(request: Request, exc: TsegError) -> JSONResponse:
        code = code_for(exc)
        if code == "internal_error":
            log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return problem_response(code, str(exc), request.url.path, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            why = next(((e.get("ctx") or {}).get("error", "") for e in errors if e.get("type") == "json_invalid"), "")
            return problem_response("invalid_json", f"the request body is not valid JSON: {why}", request.url.path)
        listed = [{"location": _location(e.get("loc", ())), "message": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in errors]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in listed)
        return problem_response("invalid_request", detail, request.url.path, errors=listed)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.url.path} (the API is under /v1; see /v1/openapi.json)"
        return problem_response(code, detail, request.url.path, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
        return problem_response("internal_error", "unexpected error; see the service's log", request.url.path)
