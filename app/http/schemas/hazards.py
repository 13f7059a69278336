"""Hazards: a session's confirmed hazards, and the fleet's map, as records and as RFC 7946 GeoJSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.http.schemas.json_types import utc_time
from app.services.tracking.types import HazardRecord


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
            first_seen=utc_time(record.first_seen),
            last_seen=utc_time(record.last_seen),
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
