"""The feed places a session's detections on the road with the camera tracking told it (`calibrated`: the session's
metadata camera, or a settled estimate), as with a key's device profile: twins 2 m apart, one repaired, seen by
vehicles whose GPS puts the other's detections on it. Told the camera, the repaired twin is found fixed; not told,
its frames keep the bearing rule and neither twin is flagged. Real registry (SQLite), real pass watcher."""

from __future__ import annotations

import pytest

from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.feed import RegistryFeed
from app.services.registry.lifecycle import Status
from app.services.registry.passes import PassWatcher
from app.services.registry.pending import SightingBuffer
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.store import HazardRegistry
from app.services.tracking.hazard_map import MapHazard
from app.services.tracking.positions import Camera
from app.services.tracking.types import FrameInput, Observation
from app.services.tracking.types import HazardRecord as TrackedHazard
from hazard_client.drives.geo import offset_position
from tests.integration.services.registry.conftest import T0
from tests.unit.services.tracking.test_positions import HEIGHT, WIDTH, image_point

CAMERA = Camera(height_m=1.4, pitch_deg=6.0, hfov_deg=60.0)
START = (52.5, 13.4)
HAZARDS = {"A": (0.0, 0.0), "B": (0.0, -2.0), "C": (-30.0, 0.0)}  # metres east, north of START; A is repaired
BOX_PX = 30.0


@pytest.fixture
async def registry(sqlite_registry: HazardRegistry) -> HazardRegistry:
    for key, (east, north) in HAZARDS.items():
        lat, lon = offset_position(*START, north, east)
        await sqlite_registry.apply_sighting(Sighting(LOCAL_TENANT, key, "pothole", lat, lon, 1.0, T0))
    return sqlite_registry


def frame(metre: int, gps_bias_north: float) -> FrameInput:
    """The camera 1 m north of START's latitude, `metre` east, heading east; B and C boxed where they are."""
    observations = []
    for key in ("B", "C"):
        east, north = HAZARDS[key]
        ahead, right = east - metre, 1.0 - north
        if 3 <= ahead <= 14:
            u, v = image_point(CAMERA, ahead, right)
            box = (u - BOX_PX / 2, v - BOX_PX / 2, u + BOX_PX / 2, v)
            observations.append(Observation("pothole", 0, 0.8, box, f"{key}{metre}"))
    lat, lon = offset_position(*START, 1.0 + gps_bias_north, metre)
    return FrameInput(
        f"r{metre}",
        T0.timestamp() + 60 + metre,
        tuple(observations),
        lat,
        lon,
        heading=90.0,
        width=WIDTH,
        height=HEIGHT,
    )


async def no_entry(map_id: str, lat: float, lon: float, tenant: str) -> MapHazard | None:
    return None  # the feed reads map entries for sightings only; these frames report none


async def statuses(registry: HazardRegistry) -> dict[str, Status]:
    return {hazard.map_key: hazard.status for hazard in (await registry.query(HazardFilter())).items}


@pytest.mark.parametrize(("told", "expected_a"), [(True, Status.SUSPECTED_FIXED), (False, Status.OPEN)])
async def test_a_camera_tracking_told_places_the_sessions_detections(
    registry: HazardRegistry, told: bool, expected_a: Status
) -> None:
    feed = RegistryFeed(SightingBuffer(registry.apply_sighting), PassWatcher(registry, range_m=14.0))
    for session in ("a", "b", "c"):
        if told:
            feed.calibrated(session, CAMERA)
        for metre in range(-60, 30):
            feed.framed(session, frame(metre, gps_bias_north=2.0), LOCAL_TENANT)
        await feed.drain(no_entry)
        await feed.passes.flush()
    assert await statuses(registry) == {"A": expected_a, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_report_sent_before_is_not_skipped_when_it_empties_another_entry(registry: HazardRegistry) -> None:
    """The feed skips a report it has written (same entry, same track, same photo); the same report that now also
    emptied another entry into its own (`Merged.emptied`: another class's report gave way to it) must still reach
    the registry, which closes the emptied entry's record as a duplicate."""
    feed = RegistryFeed(SightingBuffer(registry.apply_sighting), PassWatcher(registry, range_m=14.0))
    lat, lon = offset_position(*START, -2.0, 0.0)
    record = TrackedHazard("h1", "pothole", T0.timestamp() + 60, T0.timestamp() + 61, 5, 0.8, "m", lat, lon, "r", None)
    feed.mapped("a", "B", record, LOCAL_TENANT)
    await feed.drain(no_entry)
    feed.mapped("a", "B", record, LOCAL_TENANT, emptied=("A",))
    await feed.drain(no_entry)
    assert await statuses(registry) == {"A": Status.CLOSED, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_sighting_is_recorded_where_the_map_entry_is_with_its_uncertainty(registry: HazardRegistry) -> None:
    """The registry's record is the map entry's estimate (every vehicle's reports), not the one report's; its
    uncertainty goes with it (the CSV's and GeoJSON's `uncertainty_m`). Without the entry: the report's own."""
    feed = RegistryFeed(SightingBuffer(registry.apply_sighting), PassWatcher(registry, range_m=14.0))
    lat, lon = offset_position(*START, 40.0, 0.0)
    record = TrackedHazard(
        "h1",
        "crack",
        T0.timestamp() + 60,
        T0.timestamp() + 61,
        5,
        0.8,
        "m",
        lat,
        lon,
        "r",
        None,
        position_uncertainty_m=1.7,
        position_method="profile",
    )
    entry_lat, entry_lon = offset_position(*START, 40.5, 0.3)
    frame_lat, frame_lon = offset_position(*START, 41.5, -0.2)  # where the map's frame has it

    async def the_entry(map_id: str, lat: float, lon: float, tenant: str) -> MapHazard | None:
        return MapHazard(
            map_id, "crack", entry_lat, entry_lon, 3, 0.0, 0.0, 0.8, None, "m", 0.9, "profile", frame_lat, frame_lon
        )

    feed.mapped("a", "D", record, LOCAL_TENANT)
    await feed.drain(the_entry)
    feed.mapped("b", "E", record, LOCAL_TENANT)
    await feed.drain(no_entry)
    found = {hazard.map_key: hazard for hazard in (await registry.query(HazardFilter(label="crack"))).items}
    assert (found["D"].lat, found["D"].lon, found["D"].uncertainty_m) == (entry_lat, entry_lon, 0.9)
    assert (found["D"].frame_lat, found["D"].frame_lon) == (frame_lat, frame_lon)  # what its passes compare with
    assert (found["E"].lat, found["E"].lon, found["E"].uncertainty_m) == (lat, lon, 1.7)
    assert (found["E"].frame_lat, found["E"].frame_lon) == (None, None)


async def test_an_entry_a_report_moved_on_from_is_placed_where_it_is_without_it(registry: HazardRegistry) -> None:
    """A track's first, far-off report joined X (a twin's entry) and pulled it towards itself; as the track came near,
    the map moved the report on to Y. X's row takes X's position as it is now, and counts no second report; without
    this, the row kept the pull until X's next report (passes compared detections with a twin placed 1 m off)."""
    feed = RegistryFeed(SightingBuffer(registry.apply_sighting), PassWatcher(registry, range_m=14.0))
    lat, lon = offset_position(*START, 60.0, 0.0)
    record = TrackedHazard("h1", "crack", T0.timestamp() + 60, T0.timestamp() + 61, 5, 0.8, "m", lat, lon, "r", None)
    entries = {"X": offset_position(*START, 60.0, 1.0), "Y": offset_position(*START, 60.0, 3.0)}

    async def the_entry(map_id: str, lat: float, lon: float, tenant: str) -> MapHazard | None:
        spot = entries[map_id]
        return MapHazard(map_id, "crack", *spot, 2, 0.0, 0.0, 0.8, None, "m", 0.9, "profile", spot[0], spot[1] + 1e-5)

    feed.mapped("b", "X", record, LOCAL_TENANT)
    await feed.drain(the_entry)
    entries["X"] = offset_position(*START, 61.5, 0.0)  # where X is without b's report
    feed.mapped("b", "Y", record, LOCAL_TENANT)
    await feed.drain(the_entry)
    found = {hazard.map_key: hazard for hazard in (await registry.query(HazardFilter(label="crack"))).items}
    x_lat, x_lon = entries["X"]
    assert (found["X"].lat, found["X"].lon, found["X"].frame_lat, found["X"].frame_lon) == (
        x_lat,
        x_lon,
        x_lat,
        x_lon + 1e-5,
    )
    assert found["X"].reports == 1 and found["Y"].reports == 1
