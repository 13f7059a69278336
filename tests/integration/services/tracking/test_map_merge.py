"""The fleet map's merge rule: the Lua script (what the live path and batch jobs run) held equal to its Python twin
(`map_merge.FleetMap`) on random reports, and the cases it exists for."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import REDIS_FAILURES, create_redis
from app.services.core.types import RedisClient
from app.services.tracking.hazard_map import HazardMap, Near
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
    """Sessions passing a road's hazards (pairs side by side among them), each report a noisy, biased position
    that sharpens as it is re-reported, some by the camera's GPS."""
    rng = random.Random(seed)
    hazards = [(rng.choice(["pothole", "crack"]), rng.uniform(0, 120), rng.uniform(-1.5, 1.5)) for _ in range(10)]
    hazards += [(label, along, -lateral) for label, along, lateral in hazards[:3]]  # neighbours of one class
    reports = []
    for _ in range(count):
        session = f"s{rng.randrange(6)}"
        index = rng.randrange(len(hazards))
        label, along, lateral = hazards[index]
        method = rng.choice(["profile", "estimated", "camera_gps"])
        uncertainty = round(rng.uniform(1.5, 2.5) if method != "camera_gps" else 6.2, 3)
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


async def entries(
    hazard_map: HazardMap, client: RedisClient
) -> dict[str, tuple[float, float, float | None, str | None]]:
    found = await hazard_map.near(Near(*ORIGIN, 1000), 1000)
    return {e.hazard_id: (e.lat, e.lon, e.position_uncertainty_m, e.position_method) for e in found}


@both_redis_backends
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_lua_merge_decides_exactly_as_its_python_twin(
    fleet: tuple[HazardMap, RedisClient], seed: int
) -> None:
    hazard_map, client = fleet
    twin = FleetMap(merge_meters=8.0, merge_sigmas=3.0)
    for report in random_reports(seed):
        session, _ = report.source.split("/", 1)
        chosen = await hazard_map.merge(session, record_of(report))
        assert twin.merge(report, functools.partial(str, chosen)) == chosen  # the script's new id, if one is new
    in_redis = await entries(hazard_map, client)
    assert set(in_redis) == set(twin.entries)
    assert len(in_redis) >= 8  # the reports do exercise merging and keeping apart
    for entry_id, entry in twin.entries.items():
        assert in_redis[entry_id] == (entry.lat, entry.lon, entry.uncertainty_m, entry.method)


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
    first = await hazard_map.merge("a", record_of(report("a/1", 10.0, 0.0, uncertainty=1.0)))
    second = await hazard_map.merge("b", record_of(report("b/1", 12.0, 0.0, uncertainty=2.0)))
    far = await hazard_map.merge("c", record_of(report("c/1", 17.5, 0.0, uncertainty=1.0)))  # 7.5 m: within 8 m
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
    left = await hazard_map.merge("a", record_of(report("a/left", 10.0, -0.6)))
    right = await hazard_map.merge("a", record_of(report("a/right", 10.0, 0.6)))
    assert left != right
    # another vehicle's reports of the two go one to each
    other_left = await hazard_map.merge("b", record_of(report("b/left", 10.5, -0.8)))
    other_right = await hazard_map.merge("b", record_of(report("b/right", 10.5, 0.4)))
    assert {other_left, other_right} == {left, right}
    # a session's track that broke in two (one after the other) is one hazard
    later = await hazard_map.merge("a", record_of(report("a/again", 10.2, -0.6, seen=1010.0)))
    assert later == left


@both_redis_backends
async def test_one_object_a_session_saw_as_two_classes_at_once_is_shown_once(
    fleet: tuple[HazardMap, RedisClient],
) -> None:
    hazard_map, _ = fleet
    debris = await hazard_map.merge("a", record_of(report("a/1", 10.0, 0.0, label="debris", frames=6)))
    crack = await hazard_map.merge("a", record_of(report("a/2", 10.2, 0.1, label="crack", frames=5)))
    assert crack == debris  # the crack, of fewer frames, gave way to the debris
    labels = [e.label for e in await hazard_map.near(Near(*ORIGIN, 1000), 10)]
    assert labels == ["debris"]
    # ... until the crack track has more frames: then the debris leaves the map
    crack = await hazard_map.merge("a", record_of(report("a/2", 10.2, 0.1, label="crack", frames=9)))
    assert [e.label for e in await hazard_map.near(Near(*ORIGIN, 1000), 10)] == ["crack"]
    # another session's crack and debris 0.3 m apart at different times are two hazards
    await hazard_map.merge("b", record_of(report("b/1", 30.0, 0.0, label="debris", seen=2000.0)))
    await hazard_map.merge("b", record_of(report("b/2", 30.3, 0.0, label="crack", seen=2010.0)))
    assert len(await hazard_map.near(Near(*ORIGIN, 1000), 10)) == 3
