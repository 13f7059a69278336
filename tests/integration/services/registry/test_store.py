"""The registry on a real database (SQLite and PostgreSQL): idempotent sightings, verdicts, passes, queries."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.core.errors import HazardNotFound, TransitionNotAllowed, ValidationFailed
from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.store import HazardRegistry
from app.services.registry.tables import hazard_events, hazards
from tests.integration.services.registry.conftest import at


async def report(registry: HazardRegistry, key: str, minutes: float, **fields: Any) -> str:
    values: dict[str, Any] = {"label": "pothole", "lat": 50.85, "lon": 4.35, "uncertainty_m": 3.0} | fields
    tenant = values.pop("tenant", "city")
    return await registry.report_sighting(tenant, key, at=at(minutes), photo_url=None, **values)


async def test_a_repeated_sighting_counts_once(registry: HazardRegistry) -> None:
    assert await report(registry, "m1", 0) == "created"
    assert await report(registry, "m1", 0) == "duplicate"
    assert await report(registry, "m1", 5) == "counted"
    assert await report(registry, "m1", 5) == "duplicate"
    assert await report(registry, "m1", 1) == "duplicate"  # older than the last one counted: a late replay
    [hazard] = (await registry.query(HazardFilter())).items
    assert (hazard.reports, hazard.first_reported_at, hazard.last_reported_at) == (2, at(0), at(5))


async def test_the_same_report_again_with_its_photo_sets_the_photo_and_counts_nothing(
    registry: HazardRegistry,
) -> None:
    def sighting(minutes: float, photo_url: str) -> Any:
        return registry.report_sighting("city", "m1", "pothole", 50.85, 4.35, 3.0, at(minutes), photo_url)

    await report(registry, "m1", 0)
    assert await sighting(0, "https://cdn.example/a.jpg") == "duplicate"  # its upload landed: the photo is set
    assert await sighting(-1, "https://cdn.example/old.jpg") == "duplicate"  # a late replay changes nothing
    [hazard] = (await registry.query(HazardFilter())).items
    assert (hazard.reports, hazard.best_photo_url) == (1, "https://cdn.example/a.jpg")


async def test_a_verdict_verifies_and_is_kept_in_the_history(registry: HazardRegistry) -> None:
    await report(registry, "m1", 0)
    [hazard] = (await registry.query(HazardFilter())).items
    verified = await registry.give_verdict(hazard.id, actor="inspector-1", category="utility_cut", note="trench")
    assert verified.status is Status.VERIFIED
    history = await registry.history(hazard.id)
    assert [(e.move, e.from_status, e.to_status) for e in history] == [
        ("report", None, Status.OPEN),
        ("verify", Status.OPEN, Status.VERIFIED),
    ]
    assert (history[1].actor, history[1].category, history[1].note) == ("inspector-1", "utility_cut", "trench")


async def test_a_rejected_hazard_silences_later_reports_at_that_spot(registry: HazardRegistry) -> None:
    await report(registry, "m1", 0)
    [hazard] = (await registry.query(HazardFilter())).items
    await registry.give_verdict(hazard.id, actor="inspector-1", category="not_an_issue")
    assert await report(registry, "m1", 5) == "silenced"
    assert await report(registry, "m2", 6, lat=50.85003) == "silenced"  # a new map entry 3 m away
    assert await report(registry, "m3", 7, lat=50.86) == "created"  # a kilometre away
    assert await report(registry, "m4", 8, label="crack") == "created"  # another class at the spot
    assert (await registry.get(hazard.id)).reports == 1


async def test_closing_a_rejected_hazard_is_409_with_the_allowed_moves(registry: HazardRegistry) -> None:
    await report(registry, "m1", 0)
    [hazard] = (await registry.query(HazardFilter())).items
    await registry.give_verdict(hazard.id, actor="op", category="not_an_issue")
    with pytest.raises(TransitionNotAllowed) as refused:
        await registry.close(hazard.id, actor="op")
    assert refused.value.details == {"status": "rejected", "move": "close", "allowed": []}
    with pytest.raises(TransitionNotAllowed):
        await registry.give_verdict(hazard.id, actor="op", category="pothole")


async def test_a_verdict_for_an_unknown_hazard_or_another_tenant_is_404(registry: HazardRegistry) -> None:
    await report(registry, "m1", 0)
    [hazard] = (await registry.query(HazardFilter())).items
    with pytest.raises(HazardNotFound):
        await registry.give_verdict(hazard.id + 1000, actor="op", category="pothole")
    with pytest.raises(HazardNotFound):
        await registry.give_verdict(hazard.id, actor="op", category="pothole", tenant="another-city")


async def test_a_verdict_and_its_history_entry_are_one_transaction(
    registry: HazardRegistry, engine: AsyncEngine
) -> None:
    await report(registry, "m1", 0)
    [hazard] = (await registry.query(HazardFilter())).items

    def fail_history_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO hazard_events"):
            raise RuntimeError("the database failed between the status update and the history entry")

    event.listen(engine.sync_engine, "before_cursor_execute", fail_history_insert)
    try:
        with pytest.raises(RuntimeError):
            await registry.give_verdict(hazard.id, actor="op", category="pothole")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail_history_insert)
    async with engine.connect() as connection:
        status = await connection.scalar(sa.select(hazards.c.status).where(hazards.c.id == hazard.id))
        moves = (await connection.execute(sa.select(hazard_events.c.move))).scalars().all()
    assert status == "open"
    assert moves == ["report"]


async def test_a_hazard_is_suspected_fixed_after_three_clean_passes_and_not_before(registry: HazardRegistry) -> None:
    await report(registry, "m1", 10)
    assert await registry.record_pass("city", "m1", session_id="old", at=at(5), saw_it=False) is Status.OPEN
    assert await registry.record_pass("city", "m1", session_id="a", at=at(11), saw_it=False) is Status.OPEN
    assert await registry.record_pass("city", "m1", session_id="a", at=at(11), saw_it=False) is Status.OPEN  # again
    assert await registry.record_pass("city", "m1", session_id="b", at=at(12), saw_it=True) is Status.OPEN
    assert await registry.record_pass("city", "m1", session_id="c", at=at(13), saw_it=False) is Status.OPEN
    assert await registry.record_pass("city", "m1", session_id="d", at=at(14), saw_it=False) is Status.OPEN
    assert await registry.record_pass("city", "m1", session_id="e", at=at(15), saw_it=False) is Status.SUSPECTED_FIXED
    [hazard] = (await registry.query(HazardFilter(status=Status.SUSPECTED_FIXED))).items
    assert (await registry.history(hazard.id))[-1].actor == "system"


async def sighted(registry: HazardRegistry, session: str, minutes: float) -> str:
    return await registry.apply_sighting(
        Sighting("city", "m1", "pothole", 50.85, 4.35, 1.0, at(minutes), session_id=session)
    )


async def test_a_sessions_sighting_is_taken_back_by_its_next_pass_that_saw_nothing(registry: HazardRegistry) -> None:
    """Vehicles b, c and d each report it from afar (the map put their track's first report in its entry and moved
    it on to a twin's beside it), then pass it seeing nothing: their sightings are taken back, their passes count."""
    await sighted(registry, "a", 0)
    await registry.record_pass("city", "m1", session_id="a", at=at(1), saw_it=True)
    for minute, session in ((10, "b"), (20, "c")):
        assert await sighted(registry, session, minute) == "counted"
        assert await registry.record_pass("city", "m1", session_id=session, at=at(minute + 1), saw_it=False) is (
            Status.OPEN
        )
    await sighted(registry, "d", 30)
    assert await registry.record_pass("city", "m1", session_id="d", at=at(31), saw_it=False) is Status.SUSPECTED_FIXED
    assert (await registry.query(HazardFilter())).items[0].reports == 4  # taken back from the lifecycle, not the count


async def test_a_sighting_no_pass_of_its_session_followed_stands(registry: HazardRegistry) -> None:
    """A parked camera's report (no pass: it never drove by) holds off the clean passes before it, as does the latest
    of several; vehicle a's sighting was taken back by its own pass, which changes neither."""
    await sighted(registry, "a", 0)
    await registry.record_pass("city", "m1", session_id="a", at=at(1), saw_it=False)
    await registry.record_pass("city", "m1", session_id="b", at=at(2), saw_it=False)
    await sighted(registry, "parked", 3)
    await sighted(registry, "parked", 4)
    for minute, session in ((5, "c"), (6, "d")):
        assert await registry.record_pass("city", "m1", session_id=session, at=at(minute), saw_it=False) is (
            Status.OPEN
        )
    assert await registry.record_pass("city", "m1", session_id="e", at=at(7), saw_it=False) is Status.SUSPECTED_FIXED


async def test_a_new_sighting_reopens_a_suspected_fixed_or_closed_hazard(registry: HazardRegistry) -> None:
    await report(registry, "m1", 0)
    for minute in (1, 2, 3):
        await registry.record_pass("city", "m1", session_id=f"s{minute}", at=at(minute), saw_it=False)
    assert await report(registry, "m1", 4) == "reopened"
    [hazard] = (await registry.query(HazardFilter())).items
    assert hazard.status is Status.OPEN
    await registry.close(hazard.id, actor="op", note="repaired")
    assert await report(registry, "m1", 5) == "reopened"
    moves = [e.move for e in await registry.history(hazard.id)]
    assert moves == ["report", "suspect_fixed", "reopen", "close", "reopen"]


async def test_a_pass_of_an_unknown_hazard_is_404(registry: HazardRegistry) -> None:
    with pytest.raises(HazardNotFound):
        await registry.record_pass("city", "nope", session_id="s", at=at(0), saw_it=False)


async def test_queries_filter_by_tenant_status_label_since_and_bbox(registry: HazardRegistry) -> None:
    await report(registry, "a", 0, lat=50.0, lon=4.0)
    await report(registry, "b", 10, lat=51.0, lon=5.0, label="crack")
    await report(registry, "c", 20, lat=52.0, lon=6.0, tenant="other")
    [first, *_] = (await registry.query(HazardFilter())).items
    await registry.close(first.id, actor="op")

    async def keys(**where: Any) -> list[str]:
        return [h.map_key for h in (await registry.query(HazardFilter(**where))).items]

    assert await keys() == ["a", "b", "c"]
    assert await keys(tenant="city") == ["a", "b"]
    assert await keys(status=Status.CLOSED) == ["a"]
    assert await keys(label="crack") == ["b"]
    assert await keys(since=at(10)) == ["b", "c"]
    assert await keys(bbox=(4.5, 50.5, 6.5, 52.5)) == ["b", "c"]
    assert await keys(bbox=(3.9, 49.9, 4.1, 50.1), tenant="city") == ["a"]


async def test_pages_follow_the_cursor_and_an_oversized_page_is_422(registry: HazardRegistry) -> None:
    for index in range(5):
        await report(registry, f"m{index}", index)
    first = await registry.query(HazardFilter(), limit=2)
    second = await registry.query(HazardFilter(), limit=2, cursor=first.next_cursor)
    third = await registry.query(HazardFilter(), limit=2, cursor=second.next_cursor)
    assert [h.map_key for page in (first, second, third) for h in page.items] == [f"m{i}" for i in range(5)]
    assert third.next_cursor is None
    with pytest.raises(ValidationFailed) as refused:
        await registry.query(HazardFilter(), limit=51)
    assert refused.value.details == {"limit": 50}
    with pytest.raises(ValidationFailed):
        await registry.query(HazardFilter(bbox=(5.0, 50.0, 4.0, 51.0)))


async def absorbing(registry: HazardRegistry, key: str, minutes: float, *gone: str) -> str:
    """A report of map entry `key` into which the entries `gone` merged (`Merged.emptied`)."""
    return await registry.apply_sighting(
        Sighting("city", key, "pothole", 50.85, 4.35, 3.0, at(minutes), None, absorbs=gone)
    )


async def test_a_map_entry_gone_into_one_without_a_record_carries_its_record_on(registry: HazardRegistry) -> None:
    await report(registry, "early", 0)
    [early] = (await registry.query(HazardFilter())).items
    assert await absorbing(registry, "fleet", 5, "early") == "counted"  # the same record, under its new entry
    [hazard] = (await registry.query(HazardFilter())).items
    assert (hazard.id, hazard.map_key, hazard.reports, hazard.status) == (early.id, "fleet", 2, Status.OPEN)
    assert await absorbing(registry, "fleet", 5, "early") == "duplicate"  # a replay finds nothing left to fold


async def test_a_map_entry_gone_into_one_with_a_record_is_closed_as_its_duplicate(registry: HazardRegistry) -> None:
    await report(registry, "fleet", 0)
    await report(registry, "early", 1)
    await report(registry, "early", 2)
    by_key = {h.map_key: h for h in (await registry.query(HazardFilter())).items}
    assert await absorbing(registry, "fleet", 5, "early") == "counted"
    fleet, early = await registry.get(by_key["fleet"].id), await registry.get(by_key["early"].id)
    assert (fleet.status, fleet.reports, fleet.first_reported_at) == (Status.OPEN, 1 + 2 + 1, at(0))
    assert early.status is Status.CLOSED
    last = (await registry.history(early.id))[-1]
    assert (last.move, last.actor, last.to_status) == ("close", "system", Status.CLOSED)
    assert last.note is not None and f"hazard {fleet.id}" in last.note
    assert await absorbing(registry, "fleet", 6, "early") == "counted"  # a replay: closed already, nothing more
    assert (await registry.get(fleet.id)).reports == 5


async def test_an_operators_verified_record_is_not_folded_away(registry: HazardRegistry) -> None:
    await report(registry, "fleet", 0)
    await report(registry, "early", 1)
    by_key = {h.map_key: h for h in (await registry.query(HazardFilter())).items}
    await registry.give_verdict(by_key["early"].id, actor="inspector-1", category="pothole")
    await absorbing(registry, "fleet", 5, "early")
    assert (await registry.get(by_key["early"].id)).status is Status.VERIFIED
    assert (await registry.get(by_key["fleet"].id)).reports == 2


async def test_a_folded_duplicates_sightings_are_the_records_it_was_folded_into(registry: HazardRegistry) -> None:
    """A parked camera's report of `early` (no pass of its follows: it stands) goes with `early` into `fleet`: the
    clean passes before it do not count for `fleet`, those after it do."""
    await sighted(registry, "a", 0)  # entry m1
    await registry.apply_sighting(Sighting("city", "early", "pothole", 50.85, 4.35, 1.0, at(10), session_id="parked"))
    await registry.apply_sighting(Sighting("city", "m1", "pothole", 50.85, 4.35, 1.0, at(5), absorbs=("early",)))
    for minute, session in ((6, "b"), (7, "c"), (11, "d"), (12, "e")):
        assert await registry.record_pass("city", "m1", session_id=session, at=at(minute), saw_it=False) is (
            Status.OPEN
        )
    assert await registry.record_pass("city", "m1", session_id="f", at=at(13), saw_it=False) is Status.SUSPECTED_FIXED
