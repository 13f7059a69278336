"""Passes as the registry's feed makes them from located frames (PassWatcher over a real SQLite registry): only a
camera that had the hazard in view and drove past it counts a clean pass; a detection of the hazard's class counts
only in a frame that had the hazard in view, and only in its direction. Before this, any frame within
REGISTRY_PASS_RANGE_M covered it: a session that ended short of it, started past it or looked the other way made it
suspected_fixed, and a same-class hazard anywhere in the frame counted as seeing it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.lifecycle import Status
from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.passes import FrameSeen, PassWatcher, ahead_right
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.store import HazardRegistry
from hazard_client.drives.geo import offset_position
from tests.integration.services.registry.conftest import T0

HAZARD = (52.5, 13.4)
HEADING = 90.0  # the vehicles drive east, past the hazard 1 m to their right


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[HazardRegistry]:
    url = f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    await upgrade(url)
    engine = open_engine(url)
    registry = HazardRegistry(engine, passes_to_fix=3, max_page_size=50)
    await registry.apply_sighting(Sighting(LOCAL_TENANT, "m1", "pothole", *HAZARD, 1.0, T0))
    yield registry
    await engine.dispose()


async def drive(
    watcher: PassWatcher,
    session: str,
    metres: range,
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
