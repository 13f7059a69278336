"""A session lists one hazard per object: the detector's second class for it, at the same time and place, gives way."""

from __future__ import annotations

from app.services.tracking.hazard_map import distance_m
from app.services.tracking.service import one_per_object
from app.services.tracking.types import HazardRecord

LAT, LON = 52.0, 13.0
METRE_OF_LATITUDE = 1 / 111_195


def record(
    hazard_id: str,
    label: str,
    frames: int,
    *,
    north_m: float = 0.0,
    seen: tuple[float, float] = (100.0, 103.0),
    method: str = "profile",
) -> HazardRecord:
    return HazardRecord(
        hazard_id=hazard_id,
        label=label,
        first_seen=seen[0],
        last_seen=seen[1],
        frames=frames,
        max_confidence=0.8,
        model="m",
        lat=LAT + north_m * METRE_OF_LATITUDE,
        lon=LON,
        best_request_id="r",
        upload_media_id=None,
        position_uncertainty_m=1.0,
        position_method=method,
    )


def listed(*records: HazardRecord) -> list[str]:
    return [r.hazard_id for r in one_per_object("s1", list(records))]


def test_one_object_seen_as_two_classes_at_once_is_listed_once_as_its_most_seen_class() -> None:
    debris, crack = record("a", "debris", 10), record("b", "crack", 5, north_m=0.3)
    assert distance_m(debris.lat, debris.lon, crack.lat, crack.lon) < 0.75  # type: ignore[arg-type]
    assert listed(debris, crack) == ["a"]
    assert listed(record("a", "debris", 4), record("b", "crack", 6, north_m=0.3)) == ["b"]


def test_equal_frames_keep_the_smaller_id() -> None:
    assert listed(record("b", "debris", 5), record("a", "crack", 5)) == ["a"]


def test_two_hazards_apart_seen_one_after_the_other_or_placed_by_the_camera_stay_two() -> None:
    assert listed(record("a", "debris", 10), record("b", "crack", 5, north_m=2.0)) == ["a", "b"]
    assert listed(record("a", "debris", 10), record("b", "crack", 5, seen=(104.0, 106.0))) == ["a", "b"]
    camera = record("b", "crack", 5, method="camera_gps")
    assert listed(record("a", "debris", 10), camera) == ["a", "b"]


def test_two_hazards_of_one_class_side_by_side_stay_two() -> None:
    assert listed(record("a", "pothole", 10), record("b", "pothole", 5, north_m=0.3)) == ["a", "b"]


def test_a_hazard_without_a_location_is_listed() -> None:
    unlocated = HazardRecord("c", "crack", 100.0, 103.0, 5, 0.8, "m", None, None, "r", None)
    assert listed(record("a", "debris", 10), unlocated) == ["a", "c"]
