"""Passes as the registry's feed makes them from located frames (PassWatcher over a real SQLite registry): only a
camera that had the hazard in view and drove past it counts a clean pass; a detection of the hazard's class counts
only in a frame that had the hazard in view, and only in its direction. Before this, any frame within
REGISTRY_PASS_RANGE_M covered it: a session that ended short of it, started past it or looked the other way made it
suspected_fixed, and a same-class hazard anywhere in the frame counted as seeing it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.lifecycle import Status
from app.services.registry.passes import PLACED_KEPT, FrameSeen, PassWatcher, ahead_right
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.store import HazardRegistry
from hazard_client.drives.geo import offset_position
from tests.integration.services.registry.conftest import T0

HAZARD = (52.5, 13.4)
HEADING = 90.0  # the vehicles drive east, past the hazard 1 m to their right


@pytest.fixture
async def registry(sqlite_registry: HazardRegistry) -> HazardRegistry:
    await sqlite_registry.apply_sighting(Sighting(LOCAL_TENANT, "m1", "pothole", *HAZARD, 1.0, T0))
    return sqlite_registry


async def drive(
    watcher: PassWatcher,
    session: str,
    metres: Sequence[int],
    *,
    heading: float | None = HEADING,
    seen_at: range = range(0),
    seen_across: float | None = None,
    driving: float = HEADING,
) -> None:
    """One session's frames a metre apart at `metres` east of the hazard's (1 m north of it), a second each, after
    the hazard's report; it detected a pothole in the frames at `seen_at`, its box centred at `seen_across` of the
    image's half width (None: where the hazard is, seen through a 60-degree field of view); then a frame far away
    ends its pass."""
    start = T0.timestamp() + 60 * len(session) + 600 * ord(session[0])
    east = list(metres) if driving == HEADING else list(metres)[::-1]
    for second, metre in enumerate(east):
        lat, lon = offset_position(*HAZARD, 1.0, metre)
        across: tuple[tuple[str, float], ...] = ()
        if metre in seen_at:
            ahead, right = ahead_right(lat, lon, HEADING, *HAZARD)
            across = (
                ("pothole", right / (ahead * math.tan(math.radians(30))) if seen_across is None else seen_across),
            )
        labels = frozenset(label for label, _ in across)
        await watcher.observe(FrameSeen(session, start + second, lat, lon, labels, heading=heading, across=across))
    await watcher.observe(FrameSeen(session, start + len(east), HAZARD[0] + 0.01, HAZARD[1], frozenset()))


async def status(registry: HazardRegistry) -> Status:
    [hazard] = (await registry.query(HazardFilter())).items
    return hazard.status


async def test_three_drives_past_it_seeing_nothing_make_it_suspected_fixed(registry: HazardRegistry) -> None:
    watcher = PassWatcher(registry, range_m=25.0)
    await drive(watcher, "a", range(-30, 30))
    await drive(watcher, "b", range(-30, 30), heading=None)  # no heading: the course between its fixes
    assert await status(registry) is Status.OPEN
    await drive(watcher, "c", range(-30, 30), seen_at=range(5, 30), seen_across=0.0)  # further on, the hazard behind
    assert await status(registry) is Status.SUSPECTED_FIXED
    assert watcher.recorded == 3 and watcher.uncovered == 0


async def test_a_camera_that_never_had_it_in_view_and_drove_past_counts_no_pass(registry: HazardRegistry) -> None:
    watcher = PassWatcher(registry, range_m=25.0)
    for session in ("a", "b", "c"):  # turned off 20 m short of it: in range, never reached it
        await drive(watcher, session, range(-40, -19))
    for session in ("d", "e", "f"):  # joined the road just past it
        await drive(watcher, session, range(2, 40))
    for session in ("g", "h", "i"):  # drove past it the other way with the camera facing backwards
        await drive(watcher, session, range(-30, 30), heading=HEADING, driving=HEADING + 180)
    assert await status(registry) is Status.OPEN
    assert watcher.recorded == 0 and watcher.uncovered == 9


async def test_a_drive_that_detects_it_in_view_is_not_clean(registry: HazardRegistry) -> None:
    watcher = PassWatcher(registry, range_m=25.0)
    await drive(watcher, "a", range(-30, 30), seen_at=range(-12, -6), seen_across=0.9)  # a pothole off to the right
    await drive(watcher, "b", range(-30, 30))
    await drive(watcher, "c", range(-30, 30), seen_at=range(-12, -6))  # in view: it is still there
    await drive(watcher, "d", range(-30, 30))
    await drive(watcher, "e", range(-30, 30))
    assert await status(registry) is Status.OPEN
    await drive(watcher, "f", range(-30, 30))
    assert await status(registry) is Status.SUSPECTED_FIXED


# Detections placed on the road (the session's camera known): hazards by name, metres east and north of HAZARD,
# which is the registry's "m1" (A, the repaired one, in each test below).
TWIN_B, FURTHER = (0.0, -2.0), (13.0, 0.0)
CLEAR_BEFORE, CLEAR_AFTER, CLEAR_LATER = (-30.0, 0.0), (20.0, 0.0), (40.0, 0.0)


async def registry_of(registry: HazardRegistry, hazards: dict[str, tuple[float, float]]) -> None:
    for key, (east, north) in hazards.items():
        await registry.apply_sighting(
            Sighting(LOCAL_TENANT, key, "pothole", *offset_position(*HAZARD, north, east), 1.0, T0)
        )


Detected = Callable[[int], list[tuple[float, float]]]  # a frame's metre east -> where its detections are placed


async def drive_on_ground(
    watcher: PassWatcher,
    session: str,
    on_road: dict[str, tuple[float, float]] | Detected,
    gps_bias_north: float = 0.0,
    until: int = 30,
) -> None:
    """One session driving east 1 m north of HAZARD to `until`, a metre a second, its GPS `gps_bias_north` metres
    off; each frame detects the `on_road` hazards 3-14 m ahead of it, placed on the road where they really are (or
    where `on_road(metre)` places them)."""
    detected = on_road if callable(on_road) else (lambda metre: list(on_road.values()))
    start = T0.timestamp() + 600 * ord(session[0])
    for second, metre in enumerate(range(-60, until)):
        ground = tuple(
            ("pothole", east - metre, 1.0 - north) for east, north in detected(metre) if 3 <= east - metre <= 14
        )
        lat, lon = offset_position(*HAZARD, 1.0 + gps_bias_north, metre)
        labels = frozenset(label for label, _, _ in ground)
        await watcher.observe(FrameSeen(session, start + second, lat, lon, labels, heading=HEADING, ground=ground))
    await watcher.observe(FrameSeen(session, start + 60 + until, HAZARD[0] + 0.01, HAZARD[1], frozenset()))


async def statuses(registry: HazardRegistry) -> dict[str, Status]:
    return {hazard.map_key: hazard.status for hazard in (await registry.query(HazardFilter())).items}


@pytest.mark.parametrize("clear", [CLEAR_BEFORE, CLEAR_AFTER])
async def test_a_repaired_twin_is_told_from_the_one_beside_it_once_the_sessions_gps_offset_is_known(
    registry: HazardRegistry, clear: tuple[float, float]
) -> None:
    """Twins 2 m apart, A repaired; the vehicles' GPS is 2 m north, so B's detections land where A is. A clear
    pothole passed before them, or soon after (a pass is decided at its end), tells the session its offset, and
    B's detections are B's: A is suspected fixed, B not."""
    await registry_of(registry, {"B": TWIN_B, "C": clear})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"B": TWIN_B, "C": clear}, gps_bias_north=2.0)
    found = await statuses(registry)
    assert found == {"m1": Status.SUSPECTED_FIXED, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_pass_that_ends_before_the_session_knows_its_offset_waits_for_it(registry: HazardRegistry) -> None:
    """As above, but the clear pothole comes only after the twins' passes have ended (40 m on): they wait, parked,
    for the offset it gives, and are decided with it. Decided without it, both twins were seen."""
    await registry_of(registry, {"B": TWIN_B, "C": CLEAR_LATER})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"B": TWIN_B, "C": CLEAR_LATER}, gps_bias_north=2.0, until=60)
    found = await statuses(registry)
    assert found == {"m1": Status.SUSPECTED_FIXED, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_repaired_twin_is_not_seen_in_a_few_strays_of_the_one_beside_it(registry: HazardRegistry) -> None:
    """A repaired, B 2 m beside it. One frame in five places B's detection 1.2 m towards A, nearer A than B: a fifth
    of one object's detections, less than SEEN_SHARE. Counted one by one, each of them saw A."""
    await registry_of(registry, {"B": TWIN_B, "C": CLEAR_BEFORE})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, lambda metre: [(0.0, -0.8) if metre % 5 == 0 else TWIN_B, CLEAR_BEFORE])
    found = await statuses(registry)
    assert found == {"m1": Status.SUSPECTED_FIXED, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_twin_the_detector_finds_in_few_frames_is_seen_in_frames_with_both(registry: HazardRegistry) -> None:
    """A and B both on the road; the detector finds B in every frame and A in every fourth: A has a fifth of the
    detections on the two, as a repaired twin's strays may, but a frame with one on each shows two objects."""
    await registry_of(registry, {"B": TWIN_B, "C": CLEAR_BEFORE})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(
            watcher, session, lambda metre: [TWIN_B, CLEAR_BEFORE] + ([(0.0, 0.0)] if metre % 4 == 0 else [])
        )
    found = await statuses(registry)
    assert found == {"m1": Status.OPEN, "B": Status.OPEN, "C": Status.OPEN}


async def test_without_a_clear_hazard_to_learn_the_offset_from_twins_are_both_seen(registry: HazardRegistry) -> None:
    await registry_of(registry, {"B": TWIN_B})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"B": TWIN_B}, gps_bias_north=2.0)
    found = await statuses(registry)
    assert found == {"m1": Status.OPEN, "B": Status.OPEN}  # GPS alone cannot tell them apart: neither is flagged


async def test_a_hazard_further_along_the_same_bearing_is_not_the_repaired_one(registry: HazardRegistry) -> None:
    await registry_of(registry, {"D": FURTHER})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"D": FURTHER})
    found = await statuses(registry)
    assert found == {"m1": Status.SUSPECTED_FIXED, "D": Status.OPEN}


async def test_one_approach_is_one_pass_however_its_fixes_jitter_at_the_ranges_edge(registry: HazardRegistry) -> None:
    """The fixes put the pothole 13.0 m away, then 14.04 m (just past the 14 m range: GPS noise), then nearer: one
    approach, one pass. Ended at the edge, the one-frame pass was dropped (it neither drove past nor saw), or, had
    that frame a far-off detection near the hazard, and the twin beside it not yet in range, it "saw" it."""
    watcher = PassWatcher(registry, range_m=14.0)
    await drive(watcher, "a", [-15, -13, -14, *range(-12, 20)])
    assert (watcher.recorded, watcher.uncovered) == (1, 0)


async def test_a_car_waiting_in_view_keeps_a_bounded_pass(registry: HazardRegistry) -> None:
    """Frames for minutes from one spot 10 m short of the hazard, each detecting it: the pass keeps its latest
    PLACED_KEPT placements, not one per frame, and still saw it."""
    watcher = PassWatcher(registry, range_m=14.0)
    lat, lon = offset_position(*HAZARD, 1.0, -10.0)
    for second in range(2_000):
        ground = (("pothole", 10.0, 1.0),)
        await watcher.observe(
            FrameSeen(
                "a", T0.timestamp() + second / 15, lat, lon, frozenset({"pothole"}), heading=HEADING, ground=ground
            )
        )
    [open_pass] = watcher._open["a"].passes.values()
    assert len(open_pass.placed) == PLACED_KEPT and open_pass.saw(None)


async def test_twins_are_told_apart_where_the_fleet_maps_frame_has_them(registry: HazardRegistry) -> None:
    """B, 2 m south of the repaired A, is shown 0.5 m north of A: the fleet map averaged B's reports from vehicles
    whose GPS sat north of the first one's, while A's position stayed the first vehicle's. The registry keeps where
    the map's frame has B (its vehicles' offsets taken out): there B's detections are B's, and A goes unseen.
    Compared at the shown positions, B's detections were nearer A: A seen, B suspected fixed while it is there."""
    shown, frame = offset_position(*HAZARD, 0.5, 0.0), offset_position(*HAZARD, -2.0, 0.0)
    await registry.apply_sighting(
        Sighting(LOCAL_TENANT, "B", "pothole", *shown, 1.0, T0, frame_lat=frame[0], frame_lon=frame[1])
    )
    await registry_of(registry, {"C": CLEAR_BEFORE})
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"B": TWIN_B, "C": CLEAR_BEFORE})
    assert await statuses(registry) == {"m1": Status.SUSPECTED_FIXED, "B": Status.OPEN, "C": Status.OPEN}


async def test_a_closed_duplicate_beside_a_hazard_is_no_rival_of_it(registry: HazardRegistry) -> None:
    """B, 2 m from the pothole's record A, is a closed duplicate of it (the map merged the two). The vehicles'
    detections of the pothole land 1.2 m from A towards B: nearer B. Were B a rival, A would go unseen and be
    suspected fixed while it is there; a closed record is not on the road."""
    await registry_of(registry, {"B": TWIN_B, "C": CLEAR_BEFORE})
    duplicate = next(h for h in (await registry.query(HazardFilter())).items if h.map_key == "B")
    await registry.close(duplicate.id, actor="system", note="a duplicate of m1")
    watcher = PassWatcher(registry, range_m=14.0)
    for session in ("a", "b", "c"):
        await drive_on_ground(watcher, session, {"A": (0.0, -1.2), "C": CLEAR_BEFORE})
    assert await statuses(registry) == {"m1": Status.OPEN, "B": Status.CLOSED, "C": Status.OPEN}
