"""Batch jobs: submit -> job id -> frames -> progress -> results. Frames are worked by the queue's workers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from app.http.auth import JobsCaller, owned_by
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.detect import IMAGE_TYPES
from app.http.routers.hazards import GeoJSONResponse, json_error_responses
from app.http.schemas.frames import FrameMeta
from app.http.schemas.jobs import (
    FramesAccepted,
    IngestDir,
    JobCreate,
    JobCreated,
    JobHazardCollection,
    JobList,
    JobOptions,
    JobOut,
    JobResultItem,
    JobResultsPage,
    QueueDepth,
)
from app.services.core.errors import (
    Backpressure,
    ImageTooLarge,
    IngestDisabled,
    IngestRefused,
    JobFinished,
    JobNotFound,
    JobNotOpen,
    QueueUnavailable,
    RequestTimeout,
    SessionNotFound,
    SessionStoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.services.identity.principal import TENANT
from app.services.inference.types import DetectOptions
from app.services.jobs.service import BatchOptions, JobService
from app.services.jobs.store import NewFrame
from app.services.tracking.types import TrackParams

_BINARY = {"type": "string", "format": "binary"}
_FRAME_ENCODING = {"file": {"contentType": ", ".join(sorted(IMAGE_TYPES | {"application/octet-stream"}))}}
_JSON_TEXT = {"type": "string", "contentMediaType": "application/json"}
# One frame per `file` part, repeated for more (a schema array of files would make clients and checkers drop the
# parts' filenames). `meta` parts carry no file: one or many, as a schema can say.
_FRAME_PARTS = {
    "file": {**_BINARY, "description": "A JPEG, PNG or WebP image; repeat the part for more frames."},
    "meta": {
        "anyOf": [_JSON_TEXT, {"type": "array", "items": _JSON_TEXT}],
        "description": "Optional FrameMeta JSON, one part per frame: the n-th `meta` part describes the n-th `file` "
        "part (fewer metas than files is fine; more is refused).",
    },
}
FRAMES_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "encoding": _FRAME_ENCODING,
            "schema": {
                "type": "object",
                "properties": _FRAME_PARTS,
                "required": ["file"],
                "additionalProperties": False,
            },
        }
    },
}
_JOB_CREATE = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
_JOB_CREATE.pop("$defs", None)  # JobOptions is a component already (JobOut's options)
CREATE_BODY = {
    "required": False,
    "content": {
        "application/json": {"schema": _JOB_CREATE},
        "multipart/form-data": {
            "encoding": _FRAME_ENCODING,
            "schema": {
                "type": "object",
                "properties": {
                    "job": {"type": "string", "contentMediaType": "application/json", "description": "JobCreate JSON"},
                    **_FRAME_PARTS,
                },
                "additionalProperties": False,
            },
        },
    },
}
M = TypeVar("M", bound=BaseModel)
JOB_ERRORS = (*REQUEST_ERRORS, JobNotFound, QueueUnavailable)
FRAME_ERRORS = (*JOB_ERRORS, JobNotOpen, Backpressure, ImageTooLarge, RequestTimeout, UnsupportedMediaType)


@dataclass(frozen=True)
class FrameLimits:
    """What one request may carry: frames, and bytes per frame."""

    max_frames: int
    max_bytes: int

    async def form(self, request: Request) -> FormData:
        return await request.form(
            max_files=self.max_frames + 1, max_fields=self.max_frames + 2, max_part_size=64 * 1024
        )


def _validated(model: type[M], raw: str | bytes, field: str) -> M:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", field, *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _frames(form: FormData, limits: FrameLimits) -> list[tuple[UploadFile, FrameMeta]]:
    """The `file` parts in order, the n-th with the n-th `meta` part (a frame without one is named by its file)."""
    unexpected = sorted({key for key in form if key not in ("file", "meta", "job")})
    if unexpected:
        raise ValidationFailed("Send `file` parts and optional `meta` parts only.", details={"fields": unexpected})
    uploads = [value for value in form.getlist("file") if isinstance(value, UploadFile)]
    metas = [_validated(FrameMeta, value, "meta") for value in form.getlist("meta") if isinstance(value, str)]
    if len(uploads) > limits.max_frames:
        raise ValidationFailed("Too many frames in one request.", details={"max_frames": limits.max_frames})
    if len(metas) > len(uploads):
        raise ValidationFailed("More `meta` parts than `file` parts.", details={"files": len(uploads)})
    for number, upload in enumerate(uploads):
        media_type = (upload.content_type or "application/octet-stream").lower()
        if media_type not in IMAGE_TYPES | {"application/octet-stream"}:
            raise UnsupportedMediaType(details={"content_type": media_type, "accepted": sorted(IMAGE_TYPES)})
        if upload.size is not None and upload.size > limits.max_bytes:
            raise ImageTooLarge(details={"max_bytes": limits.max_bytes, "file": number})
    metas += [FrameMeta() for _ in range(len(uploads) - len(metas))]
    return [
        (upload, meta if meta.filename else meta.model_copy(update={"filename": upload.filename}))
        for upload, meta in zip(uploads, metas, strict=True)
    ]


async def _read(frames: list[tuple[UploadFile, FrameMeta]]) -> list[NewFrame]:
    return [NewFrame(await upload.read(), meta.model_dump(mode="json", exclude_none=True)) for upload, meta in frames]


async def _new_job(request: Request, limits: FrameLimits) -> tuple[JobCreate, list[NewFrame]]:
    """The job to create (JSON), or the job and its first frames (multipart: a `job` part, then frames)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return _validated(JobCreate, await request.body(), "job"), []
    form = await limits.form(request)
    raw_job = form.get("job")
    body = _validated(JobCreate, raw_job if isinstance(raw_job, str) else "{}", "job")
    return body, await _read(_frames(form, limits))


def _batch_options(options: JobOptions) -> BatchOptions:
    return BatchOptions(DetectOptions(options.conf, options.iou, options.max_det), options.model)


def create_jobs_router(jobs: JobService, track_params: TrackParams, max_frames: int, max_image_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/jobs", tags=["jobs"])
    limits = FrameLimits(max_frames, max_image_bytes)
    _add_collection_routes(router, jobs, limits)
    _add_job_routes(router, jobs, limits)
    _add_result_routes(router, jobs, track_params)
    return router


def _add_collection_routes(router: APIRouter, jobs: JobService, limits: FrameLimits) -> None:
    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses=error_responses(*JSON_BODY_ERRORS, *FRAME_ERRORS, SessionNotFound, SessionStoreUnavailable),
        openapi_extra={"requestBody": CREATE_BODY},
    )
    async def create_job(request: Request, caller: JobsCaller) -> JobCreated:
        """Create a job (JSON), or create it with its first frames (multipart: a `job` part, then frames). The job
        is the key's tenant's; a `session_id` must name one of that tenant's sessions."""
        body, frames = await _new_job(request, limits)
        job = await jobs.create(body.name, body.session_id, _batch_options(body.options), caller.tenant)
        frame_ids = await jobs.add_frames(job["job_id"], frames, owned_by(caller)) if frames else []
        return JobCreated.model_validate(
            {**JobOut.of(await jobs.status(job["job_id"])).model_dump(), "frame_ids": frame_ids}
        )

    @router.get("", responses=error_responses(*REQUEST_ERRORS, QueueUnavailable))
    async def list_jobs(
        caller: JobsCaller,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        tenant: Annotated[
            str | None,
            Query(
                pattern=TENANT.pattern,
                description="Admin keys and operators: one tenant's jobs (every tenant's by default). Other keys "
                "always list their own tenant's.",
            ),
        ] = None,
    ) -> JobList:
        """Recent jobs of the caller's tenant, newest first."""
        return JobList(items=[JobOut.of(job) for job in await jobs.recent(limit, owned_by(caller) or tenant)])

    @router.get("/queue", responses=error_responses(QueueUnavailable))
    async def queue_depth(caller: JobsCaller) -> QueueDepth:
        """Frames waiting for a worker, by priority."""
        return QueueDepth(**await jobs.queue_depth())


def _add_job_routes(router: APIRouter, jobs: JobService, limits: FrameLimits) -> None:
    @router.post(
        "/{job_id}/frames",
        status_code=status.HTTP_202_ACCEPTED,
        responses=error_responses(*FRAME_ERRORS),
        openapi_extra={"requestBody": FRAMES_BODY},
    )
    async def add_frames(request: Request, job_id: str, caller: JobsCaller) -> FramesAccepted:
        """Add frames; all of a call's frames are accepted, or none (429 BACKPRESSURE: retry after the delay)."""
        frames = await _read(_frames(await limits.form(request), limits))
        if not frames:
            raise ValidationFailed("Send at least one `file` part.", details={"field": "file"})
        frame_ids = await jobs.add_frames(job_id, frames, owned_by(caller))
        return FramesAccepted(accepted=len(frame_ids), frame_ids=frame_ids)

    @router.post("/{job_id}/close", responses=error_responses(*JOB_ERRORS, JobNotOpen))
    async def close_job(job_id: str, caller: JobsCaller) -> JobOut:
        """No more frames: the job completes when every frame it has is done."""
        return JobOut.of(await jobs.close(job_id, owned_by(caller)))

    @router.post(
        "/{job_id}/ingest-dir",
        status_code=status.HTTP_202_ACCEPTED,
        responses=error_responses(
            *JSON_BODY_ERRORS, *JOB_ERRORS, JobNotOpen, Backpressure, IngestRefused, IngestDisabled
        ),
    )
    async def ingest_dir(job_id: str, body: IngestDir, caller: JobsCaller) -> FramesAccepted:
        """Queue every image of a server-side directory below INGEST_ROOT (off unless it is set)."""
        frame_ids = await jobs.ingest_dir(job_id, body.path, owned_by(caller))
        return FramesAccepted(accepted=len(frame_ids), frame_ids=frame_ids)

    @router.get("/{job_id}", responses=error_responses(*JOB_ERRORS))
    async def get_job(job_id: str, caller: JobsCaller) -> JobOut:
        return JobOut.of(await jobs.status(job_id, owned_by(caller)))

    @router.delete("/{job_id}", responses=error_responses(*JOB_ERRORS, JobFinished))
    async def cancel_job(job_id: str, caller: JobsCaller) -> JobOut:
        """Cancel: frames not yet started are dropped, never inferred."""
        return JobOut.of(await jobs.cancel(job_id, owned_by(caller)))


def _add_result_routes(router: APIRouter, jobs: JobService, track_params: TrackParams) -> None:
    @router.get("/{job_id}/results", responses=error_responses(*JOB_ERRORS))
    async def job_results(
        job_id: str,
        caller: JobsCaller,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> JobResultsPage:
        """Results of frames offset .. offset+limit-1 that have finished, in frame order."""
        job, items = await jobs.results(job_id, offset, limit, owned_by(caller))
        return JobResultsPage(
            job_id=job_id,
            status=job["status"],
            items=[JobResultItem.model_validate(item) for item in items],
            offset=offset,
            limit=limit,
            total=job["total"],
            detections=job["detections"],
            hazards=job["hazards"],
        )

    @router.get(
        "/{job_id}/hazards.geojson",
        responses=json_error_responses(*JOB_ERRORS),
        response_class=GeoJSONResponse,
        response_model=JobHazardCollection,
    )
    async def export_job_hazards(job_id: str, caller: JobsCaller) -> GeoJSONResponse:
        """Hazards over the job's frames tracked in frame order (one hazard however many frames saw it), those
        with a location, as an RFC 7946 FeatureCollection."""
        collection = JobHazardCollection.model_validate(await jobs.hazards(job_id, track_params, owned_by(caller)))
        return GeoJSONResponse(collection.model_dump(mode="json"))

    @router.get(
        "/{job_id}/results.jsonl",
        responses={
            200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            **error_responses(*JOB_ERRORS),
        },
        response_class=StreamingResponse,
    )
    async def job_results_jsonl(job_id: str, caller: JobsCaller) -> StreamingResponse:
        """Every finished frame's result, one JSON object per line, in frame order (streamed)."""
        owner = owned_by(caller)
        await jobs.status(job_id, owner)  # 404 before the stream starts

        async def lines() -> AsyncIterator[bytes]:
            async for item in jobs.iter_results(job_id, owner):
                yield (json.dumps(item, separators=(",", ":")) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")
