"""``/v1/jobs/{id}/results``: a finished job's files (summary, GeoJSON, PNGs, pyramidal TIFF, and
its DICOM objects under ``dicom/`` when the service makes them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from tseg.runtime.service.core import Service
from tseg.runtime.service.routers import get_service
from tseg.runtime.service.routers.jobs import PROBLEM
from tseg.runtime.service.schemas import Results
from tseg.runtime.util.display import printable

router = APIRouter(prefix="/v1/jobs/{job_id}/results", tags=["results"])
MEDIA_TYPES = {".png": "image/png", ".geojson": "application/geo+json", ".json": "application/json",
               ".tif": "image/tiff", ".dcm": "application/dicom"}


def media_type(name: str) -> str:
    return next((t for s, t in MEDIA_TYPES.items() if name.endswith(s)), "application/octet-stream")


@router.get("", response_model=Results, responses={404: PROBLEM, 409: PROBLEM, 410: PROBLEM})
def list_results(job_id: str, service: Annotated[Service, Depends(get_service)]):
    """The result's files with their URLs, and its summary.json."""
    job, files, summary = service.result_files(job_id)
    return {"job": job.id, "folder": printable(str(job.result_folder)), "summary": summary,
            "files": [{**f, "media_type": media_type(f["name"]), "url": f"/v1/jobs/{job.id}/results/{f['name']}"}
                      for f in files]}


@router.get("/{name:path}", response_class=FileResponse, responses={
    200: {"description": "The file", "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}},
    404: PROBLEM, 409: PROBLEM, 410: PROBLEM})
def get_result(job_id: str, name: str, service: Annotated[Service, Depends(get_service)]):
    """One file: summary.json, tumour.geojson, mask.png, probability.png, overlay.png,
    foreground.png, overview.png or probability.tif; or a DICOM file the results list
    (``dicom/manifest.json``, ``dicom/tumour-seg-0.dcm``, ...)."""
    path, st = service.result_file(job_id, name)
    return FileResponse(path, media_type=media_type(name), filename=path.name, stat_result=st)
