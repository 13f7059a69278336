"""The hazard registry over SQL: sightings mirrored idempotently from the Redis map, operators' verdicts, passes
that may find a hazard fixed, pages of hazards. Every state change and its history entry are one transaction."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.services.core.errors import HazardNotFound, RegistryUnavailable, ValidationFailed
from app.services.registry.evidence import add_sighting, clean_passes, move_sightings
from app.services.registry.lifecycle import Move, Status, next_status, verdict_move
from app.services.registry.outbox import enqueue_event
from app.services.registry.queries import around, check_area, distance_m, select_hazards
from app.services.registry.records import (
    HazardEvent,
    HazardFilter,
    HazardRecord,
    Page,
    Sighting,
    SightingOutcome,
)
from app.services.registry.tables import hazard_events, hazards, passes

SYSTEM_ACTOR = "system"  # moves the registry makes itself: creation, reopening, suspected fixed


def _utc_now() -> datetime:
    return datetime.now(UTC)


def is_unreachable(exc: BaseException) -> bool:
    """The database is down, locked or unreachable (worth keeping the write), not refusing it for good."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction of the registry's database; a database that cannot be reached is 503 REGISTRY_UNAVAILABLE."""
    try:
        async with engine.begin() as connection:
            yield connection
    except Exception as exc:
        if is_unreachable(exc):
            raise RegistryUnavailable(details={"reason": type(exc).__name__}) from exc
        raise


class HazardRegistry:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        passes_to_fix: int = 3,
        max_page_size: int = 500,
        max_area_km2: float = math.inf,
        silence_radius_m: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._engine = engine
        self.passes_to_fix = passes_to_fix  # clean passes after the last sighting that make it suspected_fixed
        self.max_page_size = max_page_size
        self.max_area_km2 = max_area_km2  # a query's bbox may cover this much ground at most
        self.silence_radius_m = silence_radius_m  # a rejected hazard silences new reports this close to it
        self._clock = clock

    async def report_sighting(
        self,
        tenant: str,
        map_key: str,
        label: str,
        lat: float,
        lon: float,
        uncertainty_m: float | None,
        at: datetime,
        photo_url: str | None = None,
    ) -> SightingOutcome:
        """Mirror one report of the Redis map entry `map_key`; repeating it (same entry, same report time or an
        older one) counts nothing, so a replay after an outage is safe."""
        return await self.apply_sighting(Sighting(tenant, map_key, label, lat, lon, uncertainty_m, at, photo_url))

    async def apply_sighting(self, sighting: Sighting) -> SightingOutcome:
        try:
            return await self._apply_sighting(sighting)
        except IntegrityError:  # another writer created the row between our read and insert: now it is there
            return await self._apply_sighting(sighting)

    async def _apply_sighting(self, sighting: Sighting) -> SightingOutcome:
        async with transaction(self._engine) as connection:
            if sighting.position_only:
                await self._place(connection, sighting)
                return "duplicate"
            for gone in sighting.absorbs:
                await self._absorb(connection, sighting, gone)
            record = await self._by_key(connection, sighting.tenant, sighting.map_key)
            if record is None:
                if await self._silenced_near(connection, sighting):
                    return "silenced"
                await self._create(connection, sighting)
                return "created"
            return await self._count(connection, record, sighting)

    @staticmethod
    async def _by_key(connection: AsyncConnection, tenant: str, map_key: str) -> HazardRecord | None:
        """The record of a map entry, locked for this transaction."""
        row = (
            await connection.execute(
                sa.select(hazards).where(hazards.c.tenant == tenant, hazards.c.map_key == map_key).with_for_update()
            )
        ).first()
        return None if row is None else HazardRecord.from_row(row)

    async def _absorb(self, connection: AsyncConnection, sighting: Sighting, gone_key: str) -> None:
        """The map entry `gone_key` is gone into the sighting's (its last report moved there: one hazard). Its record
        carries on as that entry's; or, when that entry has a record already, an open or suspected_fixed one is
        closed as its duplicate, its reports added to it. An operator's verified or rejected record stays as it is."""
        gone = await self._by_key(connection, sighting.tenant, gone_key)
        if gone is None:
            return
        into = await self._by_key(connection, sighting.tenant, sighting.map_key)
        if into is None:
            await connection.execute(hazards.update().where(hazards.c.id == gone.id).values(map_key=sighting.map_key))
            return
        if gone.status not in (Status.OPEN, Status.SUSPECTED_FIXED):
            return
        first = min(into.first_reported_at, gone.first_reported_at)
        await connection.execute(
            hazards.update()
            .where(hazards.c.id == into.id)
            .values(reports=hazards.c.reports + gone.reports, first_reported_at=first)
        )
        await move_sightings(connection, gone.id, into.id)
        note = f"a duplicate of hazard {into.id}: the fleet map merged the two"
        await self._move(connection, gone, Move.CLOSE, SYSTEM_ACTOR, sighting.at, note=note)

    @staticmethod
    async def _place(connection: AsyncConnection, sighting: Sighting) -> None:
        """The map entry's row, if any, where the entry is now."""
        await connection.execute(
            hazards.update()
            .where(hazards.c.tenant == sighting.tenant, hazards.c.map_key == sighting.map_key)
            .values(**placed(sighting))
        )

    async def _silenced_near(self, connection: AsyncConnection, sighting: Sighting) -> bool:
        rejected = HazardFilter(
            tenant=sighting.tenant,
            status=Status.REJECTED,
            label=sighting.label,
            bbox=around(sighting.lat, sighting.lon, self.silence_radius_m),
        )
        rows = await connection.execute(select_hazards(rejected).with_only_columns(hazards.c.lat, hazards.c.lon))
        return any(distance_m(sighting.lat, sighting.lon, lat, lon) <= self.silence_radius_m for lat, lon in rows)

    async def _create(self, connection: AsyncConnection, sighting: Sighting) -> None:
        result = await connection.execute(
            hazards.insert().values(
                tenant=sighting.tenant,
                map_key=sighting.map_key,
                label=sighting.label,
                status=Status.OPEN.value,
                first_reported_at=sighting.at,
                last_reported_at=sighting.at,
                updated_at=sighting.at,
                reports=1,
                best_photo_url=sighting.photo_url,
                **placed(sighting),
            )
        )
        assert result.inserted_primary_key is not None  # one row inserted: its id
        hazard_id = int(result.inserted_primary_key[0])
        await add_sighting(connection, hazard_id, sighting.session_id, sighting.at)
        await self._log(connection, hazard_id, sighting.at, SYSTEM_ACTOR, "report", None, Status.OPEN, note=None)

    async def _count(self, connection: AsyncConnection, record: HazardRecord, sighting: Sighting) -> SightingOutcome:
        if record.status is Status.REJECTED:
            return "silenced"
        if sighting.at <= record.last_reported_at:
            if sighting.at == record.last_reported_at and sighting.photo_url not in (None, record.best_photo_url):
                # the same report again, now with its photo (an upload lands after the frame that made it)
                await connection.execute(
                    hazards.update().where(hazards.c.id == record.id).values(best_photo_url=sighting.photo_url)
                )
            return "duplicate"
        values: dict[str, Any] = {
            "reports": hazards.c.reports + 1,
            "last_reported_at": sighting.at,
            "updated_at": sighting.at,
            **placed(sighting),  # the map entry's position is refined as reports fuse: mirror the newest
        }
        if sighting.photo_url is not None:
            values["best_photo_url"] = sighting.photo_url
        await connection.execute(hazards.update().where(hazards.c.id == record.id).values(**values))
        await add_sighting(connection, record.id, sighting.session_id, sighting.at)
        if record.status in (Status.SUSPECTED_FIXED, Status.CLOSED):
            await self._move(connection, record, Move.REOPEN, SYSTEM_ACTOR, sighting.at, note="seen again")
            return "reopened"
        return "counted"

    async def _move(
        self,
        connection: AsyncConnection,
        record: HazardRecord,
        move: Move,
        actor: str,
        at: datetime,
        *,
        category: str | None = None,
        note: str | None = None,
    ) -> Status:
        """Change the status by `move` (refused with 409 if not allowed) and append it to the history."""
        target = next_status(record.status, move)
        await connection.execute(
            hazards.update()
            .where(hazards.c.id == record.id)
            .values(
                status=target.value, updated_at=sa.case((hazards.c.updated_at > at, hazards.c.updated_at), else_=at)
            )
        )  # updated_at never goes back: a pass's own time may be older than an operator's verdict
        await self._log(connection, record.id, at, actor, move.value, record.status, target, category, note)
        return target

    async def _log(
        self,
        connection: AsyncConnection,
        hazard_id: int,
        at: datetime,
        actor: str,
        move: str,
        from_status: Status | None,
        to_status: Status,
        category: str | None = None,
        note: str | None = None,
    ) -> None:
        await connection.execute(
            hazard_events.insert().values(
                hazard_id=hazard_id,
                at=at,
                actor=actor,
                move=move,
                from_status=None if from_status is None else from_status.value,
                to_status=to_status.value,
                category=category,
                note=note,
            )
        )
        # Webhooks hear of it through the outbox, in this same transaction: told if and only if it happened.
        change = HazardEvent(at, actor, move, from_status, to_status, category, note)
        await enqueue_event(
            connection, lambda: self._locked(connection, hazard_id, None, lock=False), change, self._clock()
        )

    async def _locked(
        self, connection: AsyncConnection, hazard_id: int, tenant: str | None, *, lock: bool = True
    ) -> HazardRecord:
        """The hazard, its row locked for the transaction's change (PostgreSQL; SQLite locks the whole file)."""
        statement = sa.select(hazards).where(hazards.c.id == hazard_id)
        if lock:
            statement = statement.with_for_update()
        if tenant is not None:
            statement = statement.where(hazards.c.tenant == tenant)
        row = (await connection.execute(statement)).first()
        if row is None:
            raise HazardNotFound(details={"hazard_id": hazard_id})
        return HazardRecord.from_row(row)

    async def give_verdict(
        self, hazard_id: int, *, actor: str, category: str, note: str | None = None, tenant: str | None = None
    ) -> HazardRecord:
        """An operator's verdict on an open hazard: not_an_issue rejects it, any other category verifies it."""
        move, parsed = verdict_move(category)
        async with transaction(self._engine) as connection:
            record = await self._locked(connection, hazard_id, tenant)
            await self._move(connection, record, move, actor, self._clock(), category=parsed.value, note=note)
            return await self._locked(connection, hazard_id, tenant)

    async def close(
        self, hazard_id: int, *, actor: str, note: str | None = None, tenant: str | None = None
    ) -> HazardRecord:
        async with transaction(self._engine) as connection:
            record = await self._locked(connection, hazard_id, tenant)
            await self._move(connection, record, Move.CLOSE, actor, self._clock(), note=note)
            return await self._locked(connection, hazard_id, tenant)

    async def record_pass(self, tenant: str, map_key: str, *, session_id: str, at: datetime, saw_it: bool) -> Status:
        """A session's camera covered the hazard's position; after `passes_to_fix` passes later than its last
        sighting that saw nothing, an open or verified hazard becomes suspected_fixed. Returns its status."""
        async with transaction(self._engine) as connection:
            record = await self._by_key(connection, tenant, map_key)
            if record is None:
                raise HazardNotFound(details={"tenant": tenant, "map_key": map_key})
            await self._insert_pass(connection, record.id, session_id, at, saw_it)
            if record.status in (Status.OPEN, Status.VERIFIED):
                clean = await clean_passes(connection, record)
                if clean >= self.passes_to_fix:
                    note = f"{clean} passes since the last sighting saw nothing"
                    return await self._move(connection, record, Move.SUSPECT_FIXED, SYSTEM_ACTOR, at, note=note)
            return record.status

    async def _insert_pass(
        self, connection: AsyncConnection, hazard_id: int, session_id: str, at: datetime, saw_it: bool
    ) -> None:
        seen = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(passes)
            .where(passes.c.hazard_id == hazard_id, passes.c.session_id == session_id, passes.c.at == at)
        )
        if not seen:  # the same pass again (a replay) counts once
            await connection.execute(
                passes.insert().values(hazard_id=hazard_id, session_id=session_id, at=at, saw_it=saw_it)
            )

    async def get(self, hazard_id: int, *, tenant: str | None = None) -> HazardRecord:
        async with transaction(self._engine) as connection:
            return await self._locked(connection, hazard_id, tenant, lock=False)

    async def history(self, hazard_id: int, *, tenant: str | None = None) -> list[HazardEvent]:
        """Every move of the hazard, oldest first."""
        async with transaction(self._engine) as connection:
            await self._locked(connection, hazard_id, tenant, lock=False)
            rows = await connection.execute(
                sa.select(hazard_events).where(hazard_events.c.hazard_id == hazard_id).order_by(hazard_events.c.id)
            )
            return [event_from_row(row) for row in rows]

    async def query(self, where: HazardFilter, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """One page of hazards matching `where`, by id (a full page when `limit` is None); 422 with the limit
        when `limit` is above it."""
        limit = self.max_page_size if limit is None else limit
        if not 1 <= limit <= self.max_page_size:
            raise ValidationFailed(
                f"limit must be between 1 and {self.max_page_size}.", details={"limit": self.max_page_size}
            )
        check_area(where, self.max_area_km2)
        statement = select_hazards(where).limit(limit + 1)
        if cursor is not None:
            statement = statement.where(hazards.c.id > parse_cursor(cursor))
        async with transaction(self._engine) as connection:
            records = [HazardRecord.from_row(row) for row in await connection.execute(statement)]
        more = len(records) > limit
        items = records[:limit]
        return Page(items=items, next_cursor=str(items[-1].id) if more else None)


def parse_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise ValidationFailed("cursor is not one this API handed out.", details={"cursor": cursor}) from None


def placed(sighting: Sighting) -> dict[str, float | None]:
    """A row's position columns as the sighting has its map entry."""
    return {
        "lat": sighting.lat,
        "lon": sighting.lon,
        "uncertainty_m": sighting.uncertainty_m,
        "frame_lat": sighting.frame_lat,
        "frame_lon": sighting.frame_lon,
    }


def event_from_row(row: Any) -> HazardEvent:
    fields = row._mapping
    return HazardEvent(
        at=fields["at"],
        actor=fields["actor"],
        move=fields["move"],
        from_status=None if fields["from_status"] is None else Status(fields["from_status"]),
        to_status=Status(fields["to_status"]),
        category=fields["category"],
        note=fields["note"],
    )
