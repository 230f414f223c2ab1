"""The request and response bodies of the HTTP API (pydantic), and so its OpenAPI schema.

Requests are strict: unknown fields are refused (``extra="forbid"``) and types are not coerced
(``"85"`` is not a threshold), so a misspelt option never silently falls back to a default. The
options object is derived from :class:`tseg.runtime.cohort.options.SlideOptions` (names, types,
defaults, ranges and help texts), so a per-slide option added there appears here too; its own
checks (plausible resolutions, low < high) run as the model's validator.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from tseg.runtime.cohort.options import SlideOptions
from tseg.runtime.errors import InvalidArgumentError

STRICT = ConfigDict(extra="forbid", strict=True)
JobState = Literal["pending", "running", "success", "failure", "cancelled"]


class _OptionsBase(BaseModel):
    model_config = STRICT

    @model_validator(mode="after")
    def _check(self) -> "_OptionsBase":
        given = {k: getattr(self, k) for k in self.model_fields_set}
        try:
            SlideOptions.from_mapping(given)
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None
        return self


def _options_model() -> type[BaseModel]:
    hints = typing.get_type_hints(SlideOptions)
    spec: dict[str, Any] = {}
    for f in dataclasses.fields(SlideOptions):
        meta = f.metadata
        kind = hints[f.name]
        constraints = {}
        if meta.get("min") is not None:
            constraints["ge"] = meta["min"]
        if meta.get("max") is not None:
            constraints["le"] = meta["max"]
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        spec[f.name] = (Optional[kind] if default is None else kind,
                        Field(default, description=meta.get("help", ""), **constraints))
    return create_model("SlideOptions", __base__=_OptionsBase, __doc__=(
        "Per-slide options (the same as `tseg-rt run`'s); fields left out take the service's defaults."), **spec)


OptionsModel = _options_model()


class SubmitRequest(BaseModel):
    """A slide to segment: a path inside the service's roots, and options."""

    model_config = STRICT
    path: str = Field(..., min_length=1, max_length=4096, description=(
        "The slide: a file, or a DICOM series folder; absolute, or relative to the first root."),
        examples=["/data/slides/case-001.svs"])
    options: Optional[OptionsModel] = Field(None, description="Options for this slide.")  # type: ignore[valid-type]
    overwrite: bool = Field(False, description="Redo the slide even if a finished result with these settings exists.")


class Progress(BaseModel):
    stage: Optional[str] = Field(None, description="queued, preparing, inference, writing or done")
    tiles_done: Optional[int] = None
    tiles_total: Optional[int] = None
    fraction: Optional[float] = None


class JobError(BaseModel):
    code: str = Field(..., description="Stable error code, e.g. missing_mpp, unsupported_slide, cancelled, interrupted")
    message: Optional[str] = None


class JobResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    outcome: Optional[str] = Field(None, description="done, skipped (an equal result existed) or postprocessed")
    folder: Optional[str] = Field(None, description="The result folder's name in the results folder")
    areas: Optional[dict[str, Any]] = None
    tiles: Optional[dict[str, Any]] = None
    timings_s: Optional[dict[str, Any]] = None
    warnings: Optional[list[Any]] = None
    dicom: Optional[dict[str, Any]] = Field(None, description=(
        "The DICOM objects (options.dicom_out): series UIDs, instances, bytes, STOW-RS status; the files are in "
        "the results listing under dicom/"))
    review: Optional[dict[str, Any]] = Field(None, description=(
        "The reviewer's verdict (review.json, saved from the viewer at /v1/jobs/{id}/viewer): verdict, note, "
        "reviewer, time, result_sha256, and stale (true when given on an earlier result of the slide)"))


class Links(BaseModel):
    self: str
    results: Optional[str] = None
    cancel: Optional[str] = None


class Job(BaseModel):
    id: str
    state: JobState
    slide: str = Field(..., description="The slide's real path")
    options: dict[str, Any] = Field(..., description="The complete options the job runs with")
    overwrite: bool
    source: str = Field(..., description="api or watch")
    submitted_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    queue_position: Optional[int] = Field(None, description="Pending jobs ahead of this one")
    attempts: int
    worker: Optional[str] = None
    progress: Progress
    time_to_first_tile_s: Optional[float] = Field(
        None, description="Seconds from the job's start to its first tile merged: identity and resume decision, "
                          "opening the slide, overview, background segmentation, then reading, running and merging "
                          "the first tile")
    cancel_requested: bool
    detail: Optional[str] = None
    result: Optional[JobResult] = None
    error: Optional[JobError] = None
    links: Links


class JobList(BaseModel):
    jobs: list[Job]
    next: Optional[str] = Field(None, description="URL of the next (older) page, if any")


class ResultFile(BaseModel):
    name: str
    bytes: int
    media_type: str
    url: str


class Results(BaseModel):
    job: str
    folder: str
    files: list[ResultFile]
    summary: dict[str, Any] = Field(..., description="The result's summary.json")


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    workers: list[dict[str, Any]]


class Info(BaseModel):
    model_config = ConfigDict(extra="allow")
    service: str
    version: Optional[str] = None
    api_version: str
    versions: dict[str, Any]
    started: Optional[str] = None
    results: str
    roots: list[str]
    defaults: dict[str, Any]
    dicom: Optional[dict[str, Any]] = Field(None, description="The service's DICOM outputs (--dicom-out, --stow); "
                                                                "null: none")
    engine: list[dict[str, Any]]
    jobs: dict[str, int]
    hot_folders: list[str]


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: Optional[list[dict[str, str]]] = None
