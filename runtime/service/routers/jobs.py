"""``/v1/jobs``: submit, list, status, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from tseg.runtime.service.core import Service
from tseg.runtime.service.problems import Problem
from tseg.runtime.service.routers import get_service
from tseg.runtime.service.schemas import Job, JobList, JobState, ProblemDetails, SubmitRequest
from tseg.runtime.service.store import Job as StoredJob

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PROBLEM = {"model": ProblemDetails, "content": {"application/problem+json": {}}}


def job_body(service: Service, job: StoredJob) -> dict:
    """The job as JSON, with links to itself, its results and its cancel call."""
    data = service.describe(job)
    base = f"/v1/jobs/{job.id}"
    data["links"] = {"self": base, "results": f"{base}/results" if job.state == "success" else None,
                     "cancel": f"{base}/cancel" if not job.final else None}
    return data


def require_json(request: Request) -> None:
    """POST bodies must be JSON (which also keeps plain HTML forms of other sites out)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Problem("unsupported_media_type", f"send the body as application/json, not {kind or 'no content type'}")


@router.post("", status_code=202, response_model=Job, dependencies=[Depends(require_json)],
             responses={200: {"model": Job, "description": "An equal job is already queued or running, or this "
                                                            "Idempotency-Key's job (header Idempotent-Replayed: true)"},
                        400: PROBLEM, 403: PROBLEM, 404: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM,
                        429: {**PROBLEM, "description": "The queue holds --max-queued pending jobs; try again after "
                                                        "Retry-After seconds"}})
def submit(body: SubmitRequest, response: Response, service: Annotated[Service, Depends(get_service)],
           idempotency_key: Annotated[Optional[str], Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                            description="Retries with the same key and body return "
                                                                        "the same job, never a second one")] = None):
    """Queue a slide. 202 with the new job; 200 with an equal queued or running job, or with the
    job of a repeated Idempotency-Key."""
    options = body.options.model_dump(exclude_unset=True) if body.options is not None else None
    sub = service.submit(body.path, options, body.overwrite, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{sub.job.id}"
    if sub.how != "created":
        response.status_code = 200
    if sub.how == "replayed":
        response.headers["Idempotent-Replayed"] = "true"
    return job_body(service, sub.job)


@router.get("", response_model=JobList)
def list_jobs(service: Annotated[Service, Depends(get_service)],
              state: Annotated[Optional[list[JobState]], Query(description="Only jobs in these states")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before: Annotated[Optional[int], Query(ge=1, le=2**63 - 1, description="Page cursor from 'next'")] = None):
    """Jobs, newest first, in pages of ``limit``."""
    jobs = service.jobs(state or (), limit + 1, before)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    nxt = None
    if more:
        states = "".join(f"&state={s}" for s in state or ())
        nxt = f"/v1/jobs?limit={limit}&before={jobs[-1].seq}{states}"
    return {"jobs": [job_body(service, j) for j in jobs], "next": nxt}


@router.get("/{job_id}", response_model=Job, responses={404: PROBLEM})
async def get_job(job_id: str, service: Annotated[Service, Depends(get_service)],
                  wait: Annotated[float, Query(ge=0, le=60, description=(
                      "Wait up to this many seconds for the job to end (long poll); 0: answer at once"))] = 0):
    """A job's state, progress (stage, tiles done / total), result summary or error. With
    ``wait``, the answer comes when the job ends (or the time is up, or the service begins to stop),
    so a client needs no polling loop."""
    job = await run_in_threadpool(service.get, job_id)
    deadline = time.monotonic() + wait
    seen = service.ended
    waiting = service.metrics.long_poll() if wait and not job.final else contextlib.nullcontext()
    with waiting:  # counted in tseg_long_polls_waiting while it waits
        while not job.final and time.monotonic() < deadline and not service.stopping.is_set():
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            if service.ended != seen:
                seen = service.ended
                job = await run_in_threadpool(service.get, job_id)
    if wait and not job.final:  # time is up: the progress as it is now
        job = await run_in_threadpool(service.get, job_id)
    return await run_in_threadpool(job_body, service, job)


@router.post("/{job_id}/cancel", response_model=Job, responses={404: PROBLEM, 409: PROBLEM})
def cancel_job(job_id: str, service: Annotated[Service, Depends(get_service)]):
    """Cancel a job: a pending one at once, a running one at its next tile (its partial outputs
    are removed). Cancelling a cancelled job is harmless; a finished one: 409."""
    return job_body(service, service.cancel(job_id))
