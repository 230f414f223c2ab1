"""``/metrics``: Prometheus text (names in :mod:`tseg.runtime.service.metrics`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from tseg.runtime.service.core import Service
from tseg.runtime.service.metrics import CONTENT_TYPE
from tseg.runtime.service.routers import get_service

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}})
def metrics(service: Annotated[Service, Depends(get_service)]):
    """Queue time, tile rate, jobs by state, device memory, readiness."""
    return PlainTextResponse(service.metrics_text(), media_type=CONTENT_TYPE)
