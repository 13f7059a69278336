"""What the registry weighs to find a hazard fixed: the sessions' sightings of it and their passes by it.

A hazard is suspected fixed after N clean passes (passes that saw nothing) later than the last evidence it is
there: a pass that saw it, or a sighting that stands. A session's sighting is taken back by a later pass of that
session by the hazard that saw nothing (were the pass between them one that saw it, that pass is the later evidence):
the map put the session's first, far-off report of a track into this entry and moved it on to another as the track
came near (a twin beside it), and the pass, made with every frame of the approach, found the detections the other's.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.registry.records import HazardRecord
from app.services.registry.tables import passes, sightings

RECENT_SIGHTINGS = 100  # the latest sightings looked at for one that stands (all taken back: the pass evidence rules)


async def add_sighting(connection: AsyncConnection, hazard_id: int, session_id: str | None, at: datetime) -> None:
    await connection.execute(sightings.insert().values(hazard_id=hazard_id, session_id=session_id, at=at))


async def move_sightings(connection: AsyncConnection, from_id: int, to_id: int) -> None:
    """A duplicate folded into another record: its sightings are the other's."""
    await connection.execute(sightings.update().where(sightings.c.hazard_id == from_id).values(hazard_id=to_id))


async def clean_passes(connection: AsyncConnection, record: HazardRecord) -> int:
    """Passes that saw nothing, later than both the last pass that saw it and the last sighting that stands."""
    last_seen = await connection.scalar(
        sa.select(sa.func.max(passes.c.at)).where(passes.c.hazard_id == record.id, passes.c.saw_it.is_(True))
    )
    standing = await _last_standing_sighting(connection, record, last_seen)
    marks = [moment for moment in (last_seen, standing) if moment is not None]
    where = [passes.c.hazard_id == record.id, passes.c.saw_it.is_(False)]
    if marks:
        where.append(passes.c.at > max(marks))
    count = await connection.scalar(sa.select(sa.func.count()).select_from(passes).where(*where))
    return int(count or 0)


async def _last_standing_sighting(
    connection: AsyncConnection, record: HazardRecord, after: datetime | None
) -> datetime | None:
    """The latest sighting (after `after`) that no later clean pass of its session took back; a record with no
    sightings kept (written before they were) stands on its last report."""
    query = sa.select(sightings.c.session_id, sightings.c.at).where(sightings.c.hazard_id == record.id)
    if after is not None:
        query = query.where(sightings.c.at > after)
    recent = (await connection.execute(query.order_by(sightings.c.at.desc()).limit(RECENT_SIGHTINGS))).all()
    if not recent:
        kept = await connection.scalar(
            sa.select(sa.func.count()).select_from(sightings).where(sightings.c.hazard_id == record.id)
        )
        return None if kept else record.last_reported_at
    sessions = {session_id for session_id, _ in recent if session_id is not None}
    clean = (
        await connection.execute(
            sa.select(passes.c.session_id, passes.c.at).where(
                passes.c.hazard_id == record.id,
                passes.c.session_id.in_(sessions),
                passes.c.saw_it.is_(False),
                passes.c.at > recent[-1].at,
            )
        )
    ).all()
    for session_id, at in recent:
        if not any(clean_session == session_id and clean_at > at for clean_session, clean_at in clean):
            moment: datetime = at
            return moment
    return None
