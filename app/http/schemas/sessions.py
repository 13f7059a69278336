"""Sessions: creating one, reading it, and its history of frames."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from app.http.schemas.detect import DetectionOut, ImageSize, ModelRef
from app.http.schemas.json_types import json_integer, utc_time
from app.services.sessions.store import Session
from app.services.uploads.status import UploadStatus


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


def session_create_body(max_ttl_seconds: int) -> type[SessionCreate]:
    """SessionCreate with this deployment's maximum TTL: the spec states it, and a request over it is refused like
    any invalid one. Named as its base, so the served component is still `SessionCreate`."""
    ttl_seconds = Annotated[int, Field(ge=1, le=max_ttl_seconds), BeforeValidator(json_integer)] | None
    return create_model(
        "SessionCreate",
        __base__=SessionCreate,
        ttl_seconds=(ttl_seconds, Field(None, description="Sliding TTL; at most SESSION_MAX_TTL_SECONDS.")),
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
            created_at=utc_time(session.created_at),
            last_activity=utc_time(session.last_activity),
            expires_at=utc_time(session.expires_at),
            ttl_seconds=session.ttl_seconds,
            frame_count=session.frame_count,
        )


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
