"""One router per resource (as MONAI Label's endpoints): jobs, results, health, metrics. Each
route is a thin shell over :class:`tseg.runtime.service.core.Service`."""

from __future__ import annotations

from fastapi import Request

from tseg.runtime.service.core import Service


def get_service(request: Request) -> Service:
    """The running service (a dependency of every route)."""
    return request.app.state.service
