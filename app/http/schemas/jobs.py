"""Request and response bodies of the batch-jobs API (`/jobs`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.http.schemas.detect import DetectionOut, ImageSize, ModelRef
from app.http.schemas.frames import FrameMeta
from app.http.schemas.hazards import POSITION_METHOD, POSITION_UNCERTAINTY, PointGeometry, PositionMethod
from app.http.schemas.json_types import Integer, Number, utc_time

JobStatus = Literal["open", "running", "completed", "failed", "cancelled"]
HAZARDS_COUNTED = (
    "Distinct hazards: the job's frames are tracked as a session's are, and a hazard counts once, when its track is "
    "confirmed (TRACK_MIN_HITS frames), however many frames see it; each detection's `hazard_id` names it. "
    "Before this counted boxes, which `detections` now counts."
)


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conf: Number = Field(0.25, ge=0, le=1)
    iou: Number = Field(0.45, ge=0, le=1)
    max_det: Integer = Field(100, ge=1, le=1000)
    model: str | None = Field(None, max_length=128, description="A model version; the active one by default.")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    session_id: str | None = Field(None, max_length=64, description="A session the job belongs to (optional).")
    options: JobOptions = Field(default_factory=JobOptions)


class JobOut(BaseModel):
    job_id: str
    name: str | None
    session_id: str | None
    status: JobStatus = Field(description="open: taking frames; completed/failed once closed and every frame is done")
    closed: bool = Field(description="No more frames will be added.")
    total: int = Field(description="Frames accepted.")
    done: int = Field(description="Frames with detections (cached ones included).")
    failed: int
    cached: int = Field(description="Frames answered from the result cache: no inference ran.")
    detections: int = Field(description="Boxes over all done frames: one hazard seen in ten frames counts ten.")
    hazards: int = Field(description=HAZARDS_COUNTED)
    options: JobOptions
    model: str | None = Field(description="The version asked for; null: whichever is active when a frame runs.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, job: dict[str, Any]) -> JobOut:
        return cls.model_validate(
            {
                **job,
                "options": {**job["options"], "model": job["model"]},
                "created_at": utc_time(job["created_at"]),
                "updated_at": utc_time(job["updated_at"]),
            }
        )


class JobCreated(JobOut):
    frame_ids: list[str] = Field(default_factory=list, description="Frames sent with the creating call, if any.")


class FramesAccepted(BaseModel):
    accepted: int
    frame_ids: list[str]


class IngestDir(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=1024, description="A directory below INGEST_ROOT.")


class FrameError(BaseModel):
    code: str
    message: str


class JobResultItem(BaseModel):
    frame_id: str
    index: int
    meta: FrameMeta
    status: Literal["done", "failed"]
    cached: bool
    detections: list[DetectionOut]
    image: ImageSize | None
    model: ModelRef | None
    timings_ms: dict[str, float]
    error: FrameError | None = Field(description="Why the frame failed (e.g. INVALID_IMAGE); null when done.")


class JobResultsPage(BaseModel):
    job_id: str
    status: JobStatus
    items: list[JobResultItem] = Field(description="Finished frames of this range, in frame order.")
    offset: int
    limit: int
    total: int = Field(description="Frames in the job.")
    detections: int = Field(description="Boxes over all the job's done frames (not only this page's).")
    hazards: int = Field(description=HAZARDS_COUNTED)


class JobList(BaseModel):
    items: list[JobOut] = Field(description="Newest first.")


class QueueDepth(BaseModel):
    live: int
    batch: int


class JobHazardProperties(BaseModel):
    hazard_id: str
    label: str
    first_seen: datetime
    last_seen: datetime
    frames: int
    max_confidence: float
    best_frame_url: str | None = Field(description="Job frames are not uploaded: null.")
    job_id: str
    model: str = Field(description="The model version that saw its best frame.")
    position_uncertainty_m: float = Field(description=POSITION_UNCERTAINTY)
    position_method: PositionMethod = Field(description=POSITION_METHOD)


class JobHazardFeature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: JobHazardProperties


class JobHazardCollection(BaseModel):
    """RFC 7946 FeatureCollection of the hazards tracked over the job's done frames, in frame order."""

    type: Literal["FeatureCollection"]
    features: list[JobHazardFeature]
