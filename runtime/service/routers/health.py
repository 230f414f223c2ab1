"""``/v1/health/live``, ``/v1/health/ready`` (liveness and readiness apart, as Triton), ``/v1/info`` and
``/v1/openapi.json``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tseg.runtime.service.core import Service
from tseg.runtime.service.routers import get_service
from tseg.runtime.service.routers.jobs import PROBLEM
from tseg.runtime.service.schemas import Info, Liveness, Readiness

router = APIRouter(prefix="/v1", tags=["health"])
API_VERSION = "1.0.0"


@router.get("/health/live", response_model=Liveness)
def live():
    """200 while the process serves requests (restart it otherwise)."""
    return {"live": True}


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(service: Annotated[Service, Depends(get_service)]):
    """200 when every device's engine is loaded and warmed up; 503 (with the reasons) before, or
    when a device failed."""
    state = service.health()
    if not state["ready"]:
        return JSONResponse(state, status_code=503)
    return state


@router.get("/info", response_model=Info, responses={401: PROBLEM})
def info(service: Annotated[Service, Depends(get_service)]):
    """Versions, engine and devices, roots, defaults and job counts."""
    return {**service.info(), "api_version": API_VERSION}


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request):
    """This API's OpenAPI document (also docs/openapi.json in the repository)."""
    return request.app.openapi()
