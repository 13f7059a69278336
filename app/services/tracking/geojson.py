"""RFC 7946 FeatureCollections of hazards: Points at [lon, lat] with 6 decimals (about 0.1 m), times as RFC 3339."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from app.services.tracking.hazard_map import MapHazard
from app.services.tracking.types import HazardRecord

MEDIA_TYPE = "application/geo+json"
DECIMALS = 6


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(lon, DECIMALS), round(lat, DECIMALS)]}


def feature_collection(features: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def hazard_properties(record: HazardRecord) -> dict[str, Any]:
    """A session hazard as `GET /sessions/{id}/hazards` lists it (its location is the feature's geometry)."""
    return {
        "hazard_id": record.hazard_id,
        "label": record.label,
        "first_seen": iso(record.first_seen),
        "last_seen": iso(record.last_seen),
        "frames": record.frames,
        "max_confidence": record.max_confidence,
        "best_frame_url": record.best_frame_url,
        "position_uncertainty_m": record.position_uncertainty_m,
        "position_method": record.position_method,
    }


def session_collection(session_id: str, records: Iterable[HazardRecord]) -> dict[str, Any]:
    return _located_collection({"session_id": session_id}, records)


def job_collection(job_id: str, records: Iterable[HazardRecord]) -> dict[str, Any]:
    return _located_collection({"job_id": job_id}, records)


def _located_collection(source: dict[str, str], records: Iterable[HazardRecord]) -> dict[str, Any]:
    """Only hazards with a location: GeoJSON has no place for the others."""
    return feature_collection(
        {
            "type": "Feature",
            "id": record.hazard_id,
            "geometry": point(record.lon, record.lat),
            "properties": {**hazard_properties(record), **source, "model": record.model},
        }
        for record in records
        if record.lon is not None and record.lat is not None
    )


def map_collection(hazards: Iterable[MapHazard]) -> dict[str, Any]:
    return feature_collection(
        {
            "type": "Feature",
            "id": hazard.hazard_id,
            "geometry": point(hazard.lon, hazard.lat),
            "properties": {
                "hazard_id": hazard.hazard_id,
                "label": hazard.label,
                "reports": hazard.reports,
                "first_reported": iso(hazard.first_reported),
                "last_reported": iso(hazard.last_reported),
                "max_confidence": hazard.max_confidence,
                "best_frame_url": hazard.best_frame_url,
                "model": hazard.model,
                "position_uncertainty_m": hazard.position_uncertainty_m,
                "position_method": hazard.position_method,
            },
        }
        for hazard in hazards
    )
