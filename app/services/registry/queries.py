"""The SELECTs the registry and its exports share: filters, the bbox, keyset pages."""

from __future__ import annotations

import math

import sqlalchemy as sa

from app.services.core.errors import ValidationFailed
from app.services.registry.records import BBox, HazardFilter
from app.services.registry.tables import hazards

METRES_PER_DEGREE_LAT = 111_320.0
EARTH_RADIUS_KM = 6371.0


def check_bbox(bbox: BBox) -> BBox:
    min_lon, min_lat, max_lon, max_lat = bbox
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValidationFailed(
            "bbox is min_lon,min_lat,max_lon,max_lat with min <= max, within ±180 and ±90.", details={"bbox": bbox}
        )
    return bbox


def bbox_area_km2(bbox: BBox) -> float:
    """The area of a longitude/latitude box on the sphere (R = 6,371 km): what the box covers on the ground, the
    same for a box near the equator and one near the pole (square degrees are not)."""
    min_lon, min_lat, max_lon, max_lat = bbox
    band = math.sin(math.radians(max_lat)) - math.sin(math.radians(min_lat))
    return EARTH_RADIUS_KM**2 * math.radians(max_lon - min_lon) * band


def check_area(where: HazardFilter, max_area_km2: float) -> None:
    """422 naming the limit when `where`'s box covers more than `max_area_km2` (REGISTRY_MAX_BBOX_KM2)."""
    if where.bbox is None:
        return
    area = bbox_area_km2(check_bbox(where.bbox))
    if area > max_area_km2:
        raise ValidationFailed(
            f"bbox covers {area:,.0f} km², more than the {max_area_km2:,.0f} km² one query may cover: "
            "export a smaller area, or several.",
            details={"field": "bbox", "area_km2": round(area, 1), "max_area_km2": max_area_km2},
        )


def select_hazards(where: HazardFilter) -> sa.Select[tuple[object, ...]]:
    """Hazards matching `where`, oldest id first (the order pages and exports walk)."""
    statement = sa.select(hazards).order_by(hazards.c.id)
    if where.tenant is not None:
        statement = statement.where(hazards.c.tenant == where.tenant)
    if where.status is not None:
        statement = statement.where(hazards.c.status == where.status.value)
    if where.label is not None:
        statement = statement.where(hazards.c.label == where.label)
    if where.since is not None:
        statement = statement.where(hazards.c.last_reported_at >= where.since)
    if where.bbox is not None:
        min_lon, min_lat, max_lon, max_lat = check_bbox(where.bbox)
        statement = statement.where(hazards.c.lat.between(min_lat, max_lat), hazards.c.lon.between(min_lon, max_lon))
    return statement


def around(lat: float, lon: float, radius_m: float) -> BBox:
    """A box that holds every point within `radius_m` of (lat, lon): the index narrows, distance decides."""
    dlat = radius_m / METRES_PER_DEGREE_LAT
    dlon = radius_m / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 1e-6))
    return (max(lon - dlon, -180), max(lat - dlat, -90), min(lon + dlon, 180), min(lat + dlat, 90))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_000.0 * math.asin(math.sqrt(a))
