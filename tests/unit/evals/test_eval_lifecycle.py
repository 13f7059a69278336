"""The lifecycle eval's scoring: which registry record is which placed hazard. Twins' two records, both nearer one
twin (the map places twins towards one side), are one each; a third is a duplicate of its nearest; a record far
from every hazard of its class matches nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from eval_lifecycle import matched
from scenes import CLASS_NAMES, PlacedHazard, Road

from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardRecord

T0 = datetime(2026, 12, 6, tzinfo=UTC)
ROAD = Road(1, (50.0, 4.0), 90.0, 200.0, ())


def placed(hazard_id: int, label: str, along: float, right: float) -> PlacedHazard:
    return PlacedHazard(hazard_id, CLASS_NAMES.index(label), along, right, *ROAD.position(along, right), look=0)


def record(record_id: int, label: str, along: float, right: float) -> HazardRecord:
    lat, lon = ROAD.position(along, right)
    return HazardRecord(record_id, "t", f"m{record_id}", label, Status.OPEN, lat, lon, 1.0, T0, T0, T0, 1, None)


def test_twins_records_are_one_each_before_any_is_a_duplicate() -> None:
    road = replace(ROAD, hazards=(placed(1, "pothole", 50.0, -1.0), placed(2, "pothole", 50.0, 1.0)))
    records = [
        record(10, "pothole", 50.0, -0.2),  # nearer twin 1 (0.8 m) than twin 2 (1.2 m)
        record(11, "pothole", 50.0, -1.6),  # nearer twin 1 too
        record(12, "pothole", 50.5, -1.4),  # a third: twin 1's duplicate
        record(13, "pothole", 80.0, 0.0),  # 30 m on: nothing
        record(14, "pothole", 64.0, -1.0),  # 14 m on: within MAP_MATCH_M, but no duplicate of twin 1's
    ]
    assert [(r.id, hazard) for r, hazard in matched(road, records)] == [
        (10, 2),
        (11, 1),
        (12, 1),
        (13, None),
        (14, None),
    ]


def test_the_pairing_is_the_nearest_in_all_not_the_nearest_pair_first() -> None:
    """Road 9208's crack twins: the record nearest twin 1 taken first leaves twin 2 the one 2.5 m away; the pairing
    nearest in all gives twin 2 the record beside it and makes the third twin 1's duplicate."""
    road = replace(ROAD, hazards=(placed(1, "crack", 47.1, -0.8), placed(2, "crack", 47.1, 0.8)))
    records = [record(61, "crack", 47.8, -1.6), record(62, "crack", 47.5, -0.2), record(63, "crack", 48.4, -2.2)]
    assert [(r.id, hazard) for r, hazard in matched(road, records)] == [(61, 1), (62, 2), (63, 1)]
