"""The fleet map's merge rule: the Lua script (what the live path and batch jobs run) held equal to its Python twin
(`map_merge.FleetMap`) on random reports, and the cases it exists for."""

from __future__ import annotations

import functools
import math
import random
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import REDIS_FAILURES, create_redis
from app.services.core.types import RedisClient
from app.services.tracking.hazard_map import HazardMap, Merged, Near
from app.services.tracking.map_merge import FleetMap, MapReport
from app.services.tracking.positions import METRES_PER_DEGREE, moved
from app.services.tracking.types import HazardRecord
from app.settings import Settings
from tests.conftest import both_redis_backends

ORIGIN = (48.2, 11.6)


@pytest.fixture
async def fleet(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[HazardMap, RedisClient]]:
    settings = make_settings()
    client = create_redis(settings.redis)
    breaker = AsyncBreaker("redis", fail_max=3, reset_seconds=1.0, failures=REDIS_FAILURES)
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    yield HazardMap(client, breaker, name, merge_meters=8.0, merge_sigmas=3.0, ttl_days=30), client
    await client.aclose()


def record_of(report: MapReport) -> HazardRecord:
    hazard_id = report.source.split("/", 1)[1]
    return HazardRecord(
        hazard_id,
        report.label,
        report.first_seen,
        report.last_seen,
        report.frames,
        0.8,
        "m",
        report.lat,
        report.lon,
        "r",
        None,
        position_uncertainty_m=report.uncertainty_m,
        position_method=report.method,
    )


def random_reports(seed: int, count: int = 160) -> list[MapReport]:
    """Sessions passing a road's hazards (pairs side by side among them), each report a noisy position that
    sharpens as it is re-reported, some by the camera's GPS, each session's off by its vehicle's GPS bias."""
    rng = random.Random(seed)
    hazards = [(rng.choice(["pothole", "crack"]), rng.uniform(0, 120), rng.uniform(-1.5, 1.5)) for _ in range(10)]
    hazards += [(label, along, -lateral) for label, along, lateral in hazards[:3]]  # neighbours of one class
    biases = [(rng.gauss(0, 2.5), rng.gauss(0, 2.5)) for _ in range(6)]
    reports = []
    for _ in range(count):
        vehicle = rng.randrange(6)
        session = f"s{vehicle}"
        index = rng.randrange(len(hazards))
        label, along, lateral = hazards[index]
        method = rng.choice(["profile", "estimated", "camera_gps"])
        uncertainty = round(rng.uniform(1.5, 2.5) if method != "camera_gps" else 6.2, 3)
        along, lateral = along + biases[vehicle][0], lateral + biases[vehicle][1]
        lat, lon = moved(*ORIGIN, 20.0, along + rng.gauss(0, uncertainty), lateral + rng.gauss(0, uncertainty))
        seen = 1000.0 + along / 8 + int(session[1:]) * 100
        frames = rng.randrange(5, 20)
        source = f"{session}/h{index}"
        reports.append(MapReport(source, label, lat, lon, uncertainty, method, seen, seen + 1.5, frames))
        if rng.random() < 0.1 and method != "camera_gps":  # the same object seen as the other class too
            other = "crack" if label == "pothole" else "pothole"
            lat, lon = moved(*ORIGIN, 20.0, along + 0.2, lateral)
            reports.append(MapReport(f"{source}x", other, lat, lon, uncertainty, method, seen, seen + 1, frames - 2))
    return reports


async def entry_of(hazard_map: HazardMap, session: str, report: MapReport) -> str:
    return (await hazard_map.merge(session, record_of(report))).entry_id


Summary = tuple[float, float, float | None, str | None, float | None, float | None]


async def entries(hazard_map: HazardMap, client: RedisClient) -> dict[str, Summary]:
    found = await hazard_map.near(Near(*ORIGIN, 1000), 1000)
    return {
        e.hazard_id: (e.lat, e.lon, e.position_uncertainty_m, e.position_method, e.frame_lat, e.frame_lon)
        for e in found
    }


@both_redis_backends
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_lua_merge_decides_exactly_as_its_python_twin(
    fleet: tuple[HazardMap, RedisClient], seed: int
) -> None:
    hazard_map, client = fleet
    twin = FleetMap(merge_meters=8.0, merge_sigmas=3.0)
    realigned = emptied = 0
    for report in random_reports(seed):
        session, _ = report.source.split("/", 1)
        merged = await hazard_map.merge(session, record_of(report))
        decided = (merged.entry_id, merged.realigned, merged.emptied)
        assert twin.merge(report, functools.partial(str, merged.entry_id)) == decided  # the script's new id, if new
        realigned, emptied = realigned + merged.realigned, emptied + len(merged.emptied)
    in_redis = await entries(hazard_map, client)
    assert set(in_redis) == set(twin.entries)
    assert len(in_redis) >= 8  # the reports do exercise merging and keeping apart
    assert realigned >= 3 and emptied >= 3  # ... sessions' offsets, and reports moving out of entries
    for entry_id, entry in twin.entries.items():
        summary = (entry.lat, entry.lon, entry.uncertainty_m, entry.method, entry.frame_lat, entry.frame_lon)
        assert in_redis[entry_id] == summary


def report(
    source: str,
    along: float,
    lateral: float,
    uncertainty: float = 1.6,
    seen: float = 1000.0,
    label: str = "pothole",
    frames: int = 5,
) -> MapReport:
    lat, lon = moved(*ORIGIN, 20.0, along, lateral)
    return MapReport(source, label, lat, lon, uncertainty, "profile", seen, seen + 1.0, frames)


@both_redis_backends
async def test_reports_that_agree_within_their_uncertainties_merge_at_their_weighted_mean(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    hazard_map, _ = fleet
    first = await entry_of(hazard_map, "a", report("a/1", 10.0, 0.0, uncertainty=1.0))
    second = await entry_of(hazard_map, "b", report("b/1", 12.0, 0.0, uncertainty=2.0))
    far = await entry_of(hazard_map, "c", report("c/1", 17.5, 0.0, uncertainty=1.0))  # 7.5 m: within 8 m
    assert first == second != far  # ... but 7.5 m > 3 sigma of two 1 m positions' difference (4.2 m)
    (entry,) = [e for e in await hazard_map.near(Near(*ORIGIN, 1000), 10) if e.hazard_id == first]
    lat, lon = moved(*ORIGIN, 20.0, 10.4, 0.0)  # weights 1 and 1/4
    assert abs(entry.lat - lat) * METRES_PER_DEGREE < 0.01 and abs(entry.lon - lon) * METRES_PER_DEGREE < 0.01
    assert entry.position_uncertainty_m == pytest.approx((1 + 1 / 4) ** -0.5)


@both_redis_backends
async def test_two_hazards_one_session_saw_at_once_stay_two_however_close(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    hazard_map, _ = fleet
    left = await entry_of(hazard_map, "a", report("a/left", 10.0, -0.6))
    right = await entry_of(hazard_map, "a", report("a/right", 10.0, 0.6))
    assert left != right
    # another vehicle's reports of the two go one to each
    other_left = await entry_of(hazard_map, "b", report("b/left", 10.5, -0.8))
    other_right = await entry_of(hazard_map, "b", report("b/right", 10.5, 0.4))
    assert {other_left, other_right} == {left, right}
    # a session's track that broke in two (one after the other) is one hazard
    later = await entry_of(hazard_map, "a", report("a/again", 10.2, -0.6, seen=1010.0))
    assert later == left


@both_redis_backends
async def test_one_object_a_session_saw_as_two_classes_at_once_is_shown_once(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    hazard_map, _ = fleet
    debris = await entry_of(hazard_map, "a", report("a/1", 10.0, 0.0, label="debris", frames=6))
    crack = await entry_of(hazard_map, "a", report("a/2", 10.2, 0.1, label="crack", frames=5))
    assert crack == debris  # the crack, of fewer frames, gave way to the debris
    labels = [e.label for e in await hazard_map.near(Near(*ORIGIN, 1000), 10)]
    assert labels == ["debris"]
    # ... until the crack track has more frames: then the debris leaves the map
    crack = await entry_of(hazard_map, "a", report("a/2", 10.2, 0.1, label="crack", frames=9))
    assert [e.label for e in await hazard_map.near(Near(*ORIGIN, 1000), 10)] == ["crack"]
    # another session's crack and debris 0.3 m apart at different times are two hazards
    await entry_of(hazard_map, "b", report("b/1", 30.0, 0.0, label="debris", seen=2000.0))
    await entry_of(hazard_map, "b", report("b/2", 30.3, 0.0, label="crack", seen=2010.0))
    assert len(await hazard_map.near(Near(*ORIGIN, 1000), 10)) == 3


@both_redis_backends
async def test_a_vehicle_whose_gps_is_off_by_metres_reports_the_fleets_hazards_once(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    """Vehicle b's GPS sits 6 m across the road from a's: too far for any report of b to agree with a's at
    first. Once three of b's hazards each had one entry of their class near them, b's offset is known, and b's
    reports, its earlier ones merged again (as the service does on `realigned`), join a's entries."""
    hazard_map, _ = fleet
    potholes = [20.0, 45.0, 70.0, 95.0]  # a's, where its GPS places them
    a_entries = [await entry_of(hazard_map, "a", report(f"a/{n}", along, 0.0, 0.9)) for n, along in enumerate(potholes)]
    b_reports = [report(f"b/{n}", along + 0.3, 6.0, 0.9, seen=2000.0) for n, along in enumerate(potholes)]
    first_b = [await hazard_map.merge("b", record_of(each)) for each in b_reports[:2]]
    assert not {m.entry_id for m in first_b} & set(a_entries)  # 6 m apart: two more potholes, for now
    third = await hazard_map.merge("b", record_of(b_reports[2]))
    assert third.realigned and third.entry_id == a_entries[2]
    for earlier, alone in zip(b_reports[:2], first_b, strict=True):  # as the service does on `realigned`
        number = b_reports.index(earlier)  # b's entry of it is emptied: one hazard, the registry is told
        assert await hazard_map.merge("b", record_of(earlier)) == Merged(a_entries[number], emptied=(alone.entry_id,))
    assert await hazard_map.merge("b", record_of(b_reports[3])) == Merged(a_entries[3])  # established once only
    found = await hazard_map.near(Near(*ORIGIN, 1000), 20)
    assert sorted(e.hazard_id for e in found) == sorted(a_entries) and {e.reports for e in found} == {2}
    for entry in found:  # where the two vehicles' positions average: each vehicle's bias is its own
        _, across = _along_across(entry.lat, entry.lon)
        assert abs(across - 3.0) < 0.05


@both_redis_backends
async def test_twins_keep_their_places_in_the_maps_frame_whichever_vehicles_report_each(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    """a reports twins 3 m apart across the road (and three clear potholes before them). b and c, whose GPS sit 7 m
    to the right of a's, report only the left twin (the right one was repaired). After b, the left twin is shown at
    +2.0 m (a's -1.5 and b's +5.5 averaged), past the right one: matched there, c's report (less c's offset, -1.5)
    would join the right twin. In the map's frame (each report less its vehicle's offset against the map) the twins
    stay 3 m apart, c's report joins the left one, and that is what the registry's passes compare detections with."""
    hazard_map, _ = fleet
    clear = [20.0, 45.0, 70.0]
    for n, along in enumerate(clear):
        await entry_of(hazard_map, "a", report(f"a/{n}", along, 0.0, 0.9))
    left = await entry_of(hazard_map, "a", report("a/left", 95.0, -1.5, 0.9))
    right = await entry_of(hazard_map, "a", report("a/right", 95.0, 1.5, 0.9))
    for vehicle in ("b", "c"):
        reports = [report(f"{vehicle}/{n}", along, 7.0, 0.9, seen=2000.0) for n, along in enumerate(clear)]
        for each in reports:
            if (await hazard_map.merge(vehicle, record_of(each))).realigned:  # as the service does: merged again
                for earlier in reports[:2]:
                    await hazard_map.merge(vehicle, record_of(earlier))
        assert await entry_of(hazard_map, vehicle, report(f"{vehicle}/left", 95.0, 5.5, 0.9, seen=2000.0)) == left
    found = {e.hazard_id: e for e in await hazard_map.near(Near(*ORIGIN, 1000), 20)}
    assert _along_across(found[left].lat, found[left].lon)[1] == pytest.approx(9.5 / 3, abs=0.05)
    frame_lat, frame_lon = found[left].frame_lat, found[left].frame_lon
    assert frame_lat is not None and frame_lon is not None
    assert _along_across(frame_lat, frame_lon)[1] == pytest.approx(-1.5, abs=0.05)
    assert _along_across(found[right].lat, found[right].lon)[1] == pytest.approx(1.5, abs=0.05)


def _along_across(lat: float, lon: float) -> tuple[float, float]:
    """Metres along the test road (bearing 20 degrees from ORIGIN) and across it (to the right)."""
    north = (lat - ORIGIN[0]) * METRES_PER_DEGREE
    east = (lon - ORIGIN[1]) * METRES_PER_DEGREE * math.cos(math.radians(ORIGIN[0]))
    bearing = math.radians(20.0)
    return north * math.cos(bearing) + east * math.sin(bearing), -north * math.sin(bearing) + east * math.cos(bearing)
