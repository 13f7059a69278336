"""Request and response bodies of the public API (the OpenAPI contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.services.sessions.store import Session


def _iso(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class SessionCreate(BaseModel):
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(None, ge=1, description="Sliding TTL; at most SESSION_MAX_TTL_SECONDS.")


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
    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    label: str
    class_id: int
    confidence: float
    box: Box


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


class HistoryPage(BaseModel):
    session_id: str
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
