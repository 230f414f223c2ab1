"""``/v1/jobs/{id}/viewer``: a finished job's result in the slide viewer (``/viewer/``, the app of
``tseg-rt view`` over the service's results folder, mounted by :mod:`tseg.runtime.service.server`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse

from tseg.runtime.service.core import Service
from tseg.runtime.service.routers import get_service
from tseg.runtime.service.routers.jobs import PROBLEM

router = APIRouter(prefix="/v1/jobs/{job_id}/viewer", tags=["results"])


@router.get("", status_code=303, response_class=RedirectResponse,
            responses={303: {"description": "The viewer page of the job's result (/viewer/slides/{folder}/)"},
                       404: PROBLEM, 409: PROBLEM, 410: PROBLEM})
def job_viewer(job_id: str, service: Annotated[Service, Depends(get_service)]) -> RedirectResponse:
    """See the job's result in the slide viewer: the slide with the tumour overlay, and the verdict."""
    _, folder, _ = service.result_folder(job_id)
    return RedirectResponse(f"/viewer/slides/{quote(folder.name)}/", status_code=303)
