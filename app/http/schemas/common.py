"""Request and response bodies of the public API (the OpenAPI contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.services.core.serving import Phase
from app.services.sessions.store import Session
from app.services.tracking.types import HazardRecord
from app.services.uploads.status import UploadStatus


def _iso(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def json_integer(value: object) -> object:
    """What JSON Schema calls an integer: pydantic's lax mode would also take `true` and `"3600"`."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


def json_number(value: object) -> object:
    """What JSON Schema calls a number: pydantic's lax mode would also take `true` and `"0.5"`."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


def json_string(value: object) -> object:
    """A JSON string (an RFC 3339 time): pydantic's lax mode would also read a number as epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: SESSION_NOT_FOUND, RATE_LIMITED, ... (see the README).")
    message: str = Field(description="For people; may change between versions.")
    details: dict[str, Any] = Field(description="What the code needs to be acted on, e.g. the accepted media types.")
    request_id: str = Field(description="Also the X-Request-ID header; the log lines of this request carry it.")


class ErrorResponse(BaseModel):
    """Every error, from every route, has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "SESSION_NOT_FOUND",
                        "message": "No such session, or it has expired.",
                        "details": {"session_id": "k3VbE2Jw4oKq5mSx0yPdLr8TfHn1aC7u"},
                        "request_id": "6f1c2b7e0a9d4c3f8e5b1a2d3c4e5f60",
                    }
                }
            ]
        }
    )

    error: ErrorBody


class SessionCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"metadata": {"vehicle": "van-7"}, "ttl_seconds": 3600}]})

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Anything the client wants kept with it, within SESSION_METADATA_MAX_BYTES of JSON, "
        "SESSION_METADATA_MAX_DEPTH levels and SESSION_METADATA_MAX_KEYS keys in all (defaults 4096, 8, 64).",
    )
    ttl_seconds: Annotated[int, Field(ge=1), BeforeValidator(json_integer)] | None = Field(
        None, description="Sliding TTL; at most SESSION_MAX_TTL_SECONDS."
    )


class SessionOut(BaseModel):
    session_id: str
    status: Literal["created", "active", "ended"]
    metadata: dict[str, Any]
    created_at: datetime
    last_activity: datetime
    expires_at: datetime
    ttl_seconds: int
    frame_count: int

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(
            session_id=session.session_id,
            status=session.status,
            metadata=session.metadata,
            created_at=_iso(session.created_at),
            last_activity=_iso(session.last_activity),
            expires_at=_iso(session.expires_at),
            ttl_seconds=session.ttl_seconds,
            frame_count=session.frame_count,
        )


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
    hazard_id: str | None = Field(
        None,
        description="The hazard this detection is part of across frames; null when the frame was served "
        "without the session store (degraded) or the entry predates tracking.",
    )
    new_hazard: bool = Field(
        False, description="True on the one frame that confirms the hazard (TRACK_MIN_HITS frames): alert once."
    )


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str = Field(description="The model version (its folder in the model repository).")
    version: str = Field(description="Digest of the version's weights: changes exactly when they do.")


class SessionCheck(BaseModel):
    verified: bool = Field(description="The session was checked against the session store.")
    degraded: bool = Field(description="Served without the session store (fail-open); history is written later.")
    frame_count: int | None = Field(description="Frames of the session so far; null when degraded.")


class DetectResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "6f1c2b7e0a9d4c3f8e5b1a2d3c4e5f60",
                    "session_id": "k3VbE2Jw4oKq5mSx0yPdLr8TfHn1aC7u",
                    "detections": [
                        {
                            "label": "pothole",
                            "class_id": 0,
                            "confidence": 0.91,
                            "box": {"x1": 412.5, "y1": 388.0, "x2": 596.25, "y2": 470.75},
                        }
                    ],
                    "image": {"width": 1280, "height": 720},
                    "model": {"name": "best0408", "version": "a381a085636d"},
                    "session": {"verified": True, "degraded": False, "frame_count": 12},
                    "timings_ms": {
                        "decode": 3.1,
                        "preprocess": 0.9,
                        "queue_wait": 0.0,
                        "infer": 11.4,
                        "postprocess": 0.3,
                    },
                }
            ]
        }
    )

    request_id: str
    session_id: str
    detections: list[DetectionOut]
    image: ImageSize
    model: ModelRef
    session: SessionCheck
    timings_ms: dict[str, float] = Field(description="decode, preprocess, queue_wait, infer, postprocess")


class UploadState(BaseModel):
    status: UploadStatus
    url: str | None = Field(None, description="Where the annotated frame landed, once it has.")


class HistoryItem(BaseModel):
    request_id: str
    at: datetime
    hazard_counts: dict[str, int]
    detections: list[DetectionOut]
    image: ImageSize
    degraded: bool
    upload: UploadState
    model: ModelRef | None = Field(None, description="The model version that produced it (absent on old entries).")


class HistoryPage(BaseModel):
    session_id: str
    items: list[HistoryItem] = Field(description="Newest first.")
    total: int
    limit: int
    offset: int


# Health reports. Fields a check only has in one outcome (a reason when it failed, a latency when it ran) are left
# out of the answer when they do not apply.


class LiveReport(BaseModel):
    status: Literal["alive"]


class ModelCheck(BaseModel):
    ok: bool
    name: str | None = None
    version: str | None = None
    precision: str | None = Field(None, description="What the model computes in on this replica: bf16, f32, ...")
    reason: str | None = None


class RedisCheck(BaseModel):
    ok: bool
    breaker: str = Field(description="closed, open or half-open")
    latency_ms: float | None = None
    reason: str | None = None


class ReadyChecks(BaseModel):
    model: ModelCheck
    redis: RedisCheck


class ReadyReport(BaseModel):
    ready: bool
    phase: Phase
    degraded: bool = Field(description="Redis is unreachable and frames are served in degraded mode.")
    reasons: list[str] = Field(description="Why it is not ready; empty when it is.")
    checks: ReadyChecks


class InferenceCheck(BaseModel):
    ok: bool
    model: str | None = Field(None, description="The active version the probe frame ran on.")
    latency_ms: float | None = None
    expected_labels: list[str] | None = None
    found_labels: list[str] | None = None
    reason: str | None = None


class SpoolCheck(BaseModel):
    ok: bool = Field(description="The spool's disk took a probe write (a full or read-only disk does not).")
    latency_ms: float
    reason: str | None = None
    bytes: int | None = Field(None, description="Bytes of spooled frames.")


class DiskError(BaseModel):
    directory: Literal["spool", "storage"]
    reason: str
    at: float = Field(description="Unix time of the failed write.")


class StorageCheck(BaseModel):
    ok: bool = Field(description="The store is reachable (or writable) and so is the spool's disk.")
    store: Literal["local", "cloudinary"]
    latency_ms: float
    reason: str | None = None
    breaker: str
    queued: int = Field(description="Uploads waiting in memory.")
    spooled: int = Field(description="Uploads waiting on disk for a retry.")
    spool: SpoolCheck | None = None
    frames: int | None = Field(None, description="Local store: frames kept (bounded by LOCAL_STORAGE_MAX_MB/_AGE).")
    bytes: int | None = Field(None, description="Local store: their bytes.")
    disk_errors: dict[str, int] = Field(
        default_factory=dict, description="Writes refused by the disk since start, by directory (spool, storage)."
    )
    last_disk_error: DiskError | None = None


class DeepChecks(BaseModel):
    inference: InferenceCheck
    redis: RedisCheck
    storage: StorageCheck


class DeepReport(BaseModel):
    status: Literal["ok", "fail"]
    checks: DeepChecks
    age_seconds: float = Field(0.0, description="How old the report is: one run serves HEALTH_DEEP_CACHE_SECONDS.")


class HealthLinks(BaseModel):
    live: str
    ready: str
    deep: str


class ServiceLinks(BaseModel):
    docs: str
    openapi: str
    health: HealthLinks
    metrics: str


class ServiceIndex(BaseModel):
    service: str
    version: str
    links: ServiceLinks


# Hazards: a session's confirmed hazards, and the fleet's map, as records and as RFC 7946 GeoJSON.


class Location(BaseModel):
    lat: float = Field(description="WGS-84 degrees.")
    lon: float = Field(description="WGS-84 degrees.")


class HazardOut(BaseModel):
    hazard_id: str
    label: str
    first_seen: datetime
    last_seen: datetime
    frames: int = Field(description="Frames it was detected in.")
    max_confidence: float
    best_frame_url: str | None = Field(description="Its best annotated frame, once that upload has landed.")
    location: Location | None = Field(description="The GPS of the last frame that saw it; null without GPS.")

    @classmethod
    def of(cls, record: HazardRecord) -> HazardOut:
        lat, lon = record.lat, record.lon
        return cls(
            hazard_id=record.hazard_id,
            label=record.label,
            first_seen=_iso(record.first_seen),
            last_seen=_iso(record.last_seen),
            frames=record.frames,
            max_confidence=record.max_confidence,
            best_frame_url=record.best_frame_url,
            location=Location(lat=lat, lon=lon) if lat is not None and lon is not None else None,
        )


class SessionHazards(BaseModel):
    session_id: str
    hazards: list[HazardOut] = Field(description="Confirmed hazards, first seen first.")


class PointGeometry(BaseModel):
    type: Literal["Point"]
    coordinates: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(
        description="[lon, lat], WGS-84 degrees, 6 decimals."
    )


class SessionHazardProperties(BaseModel):
    hazard_id: str
    label: str
    first_seen: datetime
    last_seen: datetime
    frames: int
    max_confidence: float
    best_frame_url: str | None
    session_id: str
    model: str = Field(description="The model version that saw its best frame.")


class SessionHazardFeature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: SessionHazardProperties


class SessionHazardCollection(BaseModel):
    """RFC 7946 FeatureCollection of the session's hazards that have a location."""

    type: Literal["FeatureCollection"]
    features: list[SessionHazardFeature]


class MapHazardProperties(BaseModel):
    hazard_id: str
    label: str
    reports: int = Field(description="Sessions that reported it.")
    first_reported: datetime
    last_reported: datetime
    max_confidence: float
    best_frame_url: str | None
    model: str


class MapHazardFeature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: MapHazardProperties


class MapHazardCollection(BaseModel):
    """RFC 7946 FeatureCollection of map hazards; each position is the confidence-weighted mean of its reports."""

    type: Literal["FeatureCollection"]
    features: list[MapHazardFeature]
