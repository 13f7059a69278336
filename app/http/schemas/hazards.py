"""Hazards: a session's confirmed hazards, and the fleet's map, as records and as RFC 7946 GeoJSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

from pydantic import BaseModel, Field

from app.http.schemas.json_types import utc_time
from app.services.tracking.types import HazardRecord

PositionMethod = Literal["profile", "session", "estimated", "camera_gps"]
POSITION_METHOD = (
    "How the position was found: projected from the image with the key's device profile (`profile`), the "
    "session's `camera` metadata (`session`), or a calibration estimated from the session's own tracks "
    "(`estimated`); else the camera's GPS at the nearest view (`camera_gps`)."
)
POSITION_UNCERTAINTY = "One standard deviation of the position, per axis, in metres (GPS bias included)."


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
    location: Location | None = Field(
        description="Where it is on the road (see position_method); null when its frames had no GPS."
    )
    position_uncertainty_m: float | None = Field(None, description=POSITION_UNCERTAINTY + " Null without a location.")
    position_method: PositionMethod | None = Field(None, description=POSITION_METHOD + " Null without a location.")

    @classmethod
    def of(cls, record: HazardRecord) -> HazardOut:
        lat, lon = record.lat, record.lon
        return cls(
            hazard_id=record.hazard_id,
            label=record.label,
            first_seen=utc_time(record.first_seen),
            last_seen=utc_time(record.last_seen),
            frames=record.frames,
            max_confidence=record.max_confidence,
            best_frame_url=record.best_frame_url,
            location=Location(lat=lat, lon=lon) if lat is not None and lon is not None else None,
            position_uncertainty_m=record.position_uncertainty_m,
            position_method=cast(PositionMethod | None, record.position_method),
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
    position_uncertainty_m: float = Field(description=POSITION_UNCERTAINTY)
    position_method: PositionMethod = Field(description=POSITION_METHOD)


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
    position_uncertainty_m: float | None = Field(
        description="Of the entry's position, from its reports' (one standard deviation per axis, metres); null "
        "for an entry made before positions had one."
    )
    position_method: PositionMethod | None = Field(description="The method of its most precise report.")


class MapHazardFeature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: MapHazardProperties


class MapHazardCollection(BaseModel):
    """RFC 7946 FeatureCollection of map hazards; each position is the uncertainty-weighted mean of its reports."""

    type: Literal["FeatureCollection"]
    features: list[MapHazardFeature]
