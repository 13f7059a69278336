"""Typed answers of the API. Each class has the name of the OpenAPI component it reads (`GET /openapi.json`), the
same fields and the same required ones: tests/api/test_client.py checks them against the served document.

Readers are tolerant: a field the server adds later is ignored, not an error (pydantic's default).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["open", "running", "completed", "failed", "cancelled"]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str


class SessionOut(BaseModel):
    session_id: str
    status: Literal["created", "active", "ended"]
    metadata: dict[str, Any]
    created_at: datetime
    last_activity: datetime
    expires_at: datetime
    ttl_seconds: int
    frame_count: int


class Box(BaseModel):
    """Pixels of the uploaded (EXIF-oriented) image: top-left and bottom-right corners."""

    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    label: str
    class_id: int
    confidence: float
    box: Box
    hazard_id: str | None = None
    new_hazard: bool = False


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str
    version: str


class SessionCheck(BaseModel):
    verified: bool
    degraded: bool
    frame_count: int | None


class DetectResponse(BaseModel):
    request_id: str
    session_id: str
    detections: list[DetectionOut]
    image: ImageSize
    model: ModelRef
    session: SessionCheck
    timings_ms: dict[str, float]


class UploadState(BaseModel):
    status: str = Field(description="none, skipped, pending, uploaded, spooled, shed, dropped, failed or lost")
    url: str | None = None


class HistoryItem(BaseModel):
    request_id: str
    at: datetime
    hazard_counts: dict[str, int]
    detections: list[DetectionOut]
    image: ImageSize
    degraded: bool
    upload: UploadState
    model: ModelRef | None = None


class HistoryPage(BaseModel):
    session_id: str
    items: list[HistoryItem]
    total: int
    limit: int
    offset: int


class Location(BaseModel):
    lat: float
    lon: float


class HazardOut(BaseModel):
    hazard_id: str
    label: str
    first_seen: datetime
    last_seen: datetime
    frames: int
    max_confidence: float
    best_frame_url: str | None
    location: Location | None
    position_uncertainty_m: float | None = None  # metres, one standard deviation per axis
    position_method: Literal["profile", "session", "estimated", "camera_gps"] | None = None


class SessionHazards(BaseModel):
    session_id: str
    hazards: list[HazardOut]


class JobOptions(BaseModel):
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    model: str | None = None


class JobOut(BaseModel):
    job_id: str
    name: str | None
    session_id: str | None
    status: JobStatus
    closed: bool
    total: int
    done: int
    failed: int
    cached: int
    detections: int  # boxes over the done frames
    hazards: int  # distinct tracked hazards (each detection's hazard_id names one)
    options: JobOptions
    model: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """Every frame is done or failed (and no more will come), or the job was cancelled."""
        return self.status in ("completed", "failed", "cancelled")


class JobCreated(JobOut):
    frame_ids: list[str] = Field(default_factory=list)


class FramesAccepted(BaseModel):
    accepted: int
    frame_ids: list[str]


class FrameMeta(BaseModel):
    filename: str | None = None
    captured_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    speed_mps: float | None = None


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
    error: FrameError | None


class JobResultsPage(BaseModel):
    job_id: str
    status: JobStatus
    items: list[JobResultItem]
    offset: int
    limit: int
    total: int
    detections: int
    hazards: int


class JobList(BaseModel):
    items: list[JobOut]


class QueueDepth(BaseModel):
    live: int
    batch: int


class LiveReport(BaseModel):
    status: Literal["alive"]


class ModelCheck(BaseModel):
    ok: bool
    name: str | None = None
    version: str | None = None
    precision: str | None = None
    reason: str | None = None


class RedisCheck(BaseModel):
    ok: bool
    breaker: str
    latency_ms: float | None = None
    reason: str | None = None


class RegistryCheck(BaseModel):
    ok: bool
    kept: int
    queued: int
    reason: str | None = None


class ReadyChecks(BaseModel):
    model: ModelCheck
    redis: RedisCheck
    registry: RegistryCheck | None = None


class ReadyReport(BaseModel):
    ready: bool
    phase: str = Field(description="starting, ready, model_failed or shutting_down")
    degraded: bool
    reasons: list[str]
    checks: ReadyChecks


class InferenceCheck(BaseModel):
    ok: bool
    model: str | None = None
    latency_ms: float | None = None
    expected_labels: list[str] | None = None
    found_labels: list[str] | None = None
    reason: str | None = None


class SpoolCheck(BaseModel):
    ok: bool
    latency_ms: float
    reason: str | None = None
    bytes: int | None = None


class DiskError(BaseModel):
    directory: Literal["spool", "storage"]
    reason: str
    at: float


class StorageCheck(BaseModel):
    ok: bool
    store: Literal["local", "cloudinary"]
    latency_ms: float
    reason: str | None = None
    breaker: str
    queued: int
    spooled: int
    spool: SpoolCheck | None = None
    frames: int | None = None
    bytes: int | None = None
    disk_errors: dict[str, int] = Field(default_factory=dict)
    last_disk_error: DiskError | None = None


class DeepChecks(BaseModel):
    inference: InferenceCheck
    redis: RedisCheck
    storage: StorageCheck


class DeepReport(BaseModel):
    status: Literal["ok", "fail"]
    checks: DeepChecks
    age_seconds: float = 0.0


class ModelVersionOut(BaseModel):
    name: str
    state: str = Field(description="unloaded, loading, available, unloading or failed")
    active: bool
    reason: str | None
    version: str | None
    input_size: str | None
    load_seconds: float | None
    compile_seconds: float | None
    loaded_mb: float | None
    estimated_mb: float
    pool: dict[str, int] | None


class ProcessModels(BaseModel):
    status: str = Field(description="running or lost")
    role: str | None = Field(None, description="api or worker")
    active: str | None
    models: dict[str, str]


class ModelsOverview(BaseModel):
    active: str | None
    desired: dict[str, Any] | None
    versions: list[ModelVersionOut]
    processes: dict[str, ProcessModels]


class FleetOut(BaseModel):
    processes: list[dict[str, Any]]


# API keys and operators (the admin API): a key's text is in `KeyCreated` only, the one answer that carries it.

ScopeName = Literal["detect", "jobs", "map:read", "admin"]
RoleName = Literal["admin", "inspector", "viewer"]


class KeyLimitsBody(BaseModel):
    frames_per_second: float | None = None
    sessions_per_minute: float | None = None
    jobs_in_flight: int | None = None


class DeviceProfileBody(BaseModel):
    height_m: float
    pitch_deg: float
    hfov_deg: float
    mounting: str = "windshield"


class KeyOut(BaseModel):
    key_id: str
    name: str
    tenant: str
    scopes: list[ScopeName]
    status: Literal["active", "revoked", "expired"]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    limits: KeyLimitsBody
    device_profile: DeviceProfileBody | None


class KeyCreated(BaseModel):
    key: str = Field(repr=False)  # never in a repr, a log line or a traceback's locals
    record: KeyOut


class KeyList(BaseModel):
    keys: list[KeyOut]


class OperatorOut(BaseModel):
    name: str
    role: RoleName
    disabled: bool
    created_at: float
    disabled_at: float | None
    last_login_at: float | None


class OperatorList(BaseModel):
    operators: list[OperatorOut]


class AuditEntryOut(BaseModel):
    entry_id: str
    at: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntryOut]


# Every answer model above, by its OpenAPI component name (the test walks this).
COMPONENTS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        ErrorBody,
        SessionOut,
        Box,
        DetectionOut,
        ImageSize,
        ModelRef,
        SessionCheck,
        DetectResponse,
        UploadState,
        HistoryItem,
        HistoryPage,
        Location,
        HazardOut,
        SessionHazards,
        JobOptions,
        JobOut,
        JobCreated,
        FramesAccepted,
        FrameMeta,
        FrameError,
        JobResultItem,
        JobResultsPage,
        JobList,
        QueueDepth,
        LiveReport,
        ModelCheck,
        RedisCheck,
        ReadyChecks,
        ReadyReport,
        InferenceCheck,
        SpoolCheck,
        DiskError,
        StorageCheck,
        DeepChecks,
        DeepReport,
        ModelVersionOut,
        ProcessModels,
        ModelsOverview,
        FleetOut,
        KeyLimitsBody,
        DeviceProfileBody,
        KeyOut,
        KeyCreated,
        KeyList,
        OperatorOut,
        OperatorList,
        AuditEntryOut,
        AuditList,
    )
}
