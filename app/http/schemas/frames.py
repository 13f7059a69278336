"""Where and when a frame was taken: one model, `FrameMeta`, with one set of ranges. /detect reads the same fields
as query parameters or multipart fields beside `file`; a job frame carries them as its `meta` part."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.http.schemas.json_types import Number, json_string
from app.services.tracking import meta as tracking_meta


def _bound(value: float) -> float:
    # Whole bounds as integers: the served schemas say 90, not 90.0 (the multipart one below says 90.0, as ever).
    return int(value) if value.is_integer() else value


# The ranges are the tracking service's, the ones it checks /detect's values against: inclusive, so a heading is
# 0..360 as the README documents it (360 and 0 are both north).
RANGES: dict[str, tuple[float, float]] = {
    field: (_bound(low), _bound(high)) for field, (low, high) in tracking_meta.RANGES.items()
}
LAT, LON, HEADING, SPEED = RANGES["lat"], RANGES["lon"], RANGES["heading"], RANGES["speed_mps"]
# /detect's options, wherever a frame is sent (query parameters, a stream's frame header).
CONF, IOU, MAX_DET = (0.0, 1.0), (0.0, 1.0), (1, 1000)
FIELDS = tracking_meta.FIELDS
DESCRIPTIONS = {
    "lat": "Latitude, WGS-84 degrees (with lon).",
    "lon": "Longitude, WGS-84 degrees (with lat).",
    "heading": "Heading, degrees clockwise from north.",
    "speed_mps": "Speed, metres per second.",
    "captured_at": "When the frame was taken, RFC 3339 with an offset; tracking uses it instead of the arrival time.",
}


class FrameMeta(BaseModel):
    """Optional facts about one frame, kept beside its result."""

    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(None, max_length=512)
    captured_at: Annotated[datetime, BeforeValidator(json_string)] | None = Field(None, description="RFC 3339")
    lat: Number | None = Field(None, ge=LAT[0], le=LAT[1])
    lon: Number | None = Field(None, ge=LON[0], le=LON[1])
    heading: Number | None = Field(None, ge=HEADING[0], le=HEADING[1])
    speed_mps: Number | None = Field(None, ge=SPEED[0], le=SPEED[1])


def meta_query(field: str) -> Any:
    """/detect's query parameter for a numeric FrameMeta field: its range and description."""
    low, high = RANGES[field]
    return Query(ge=low, le=high, description=DESCRIPTIONS[field])


def captured_at_query() -> Any:
    """/detect's `captured_at` query parameter: RFC 3339 text, checked by the tracking service like the form field."""
    return Query(max_length=64, description=DESCRIPTIONS["captured_at"], json_schema_extra={"format": "date-time"})


# The same fields as multipart parts beside /detect's `file` (the body is read by hand, so the spec says what is read).
MULTIPART_PROPERTIES: dict[str, dict[str, object]] = {
    **{
        field: {"type": "number", "minimum": float(low), "maximum": float(high), "description": DESCRIPTIONS[field]}
        for field, (low, high) in RANGES.items()
    },
    "captured_at": {"type": "string", "format": "date-time", "description": DESCRIPTIONS["captured_at"]},
}
