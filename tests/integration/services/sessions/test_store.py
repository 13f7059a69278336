"""The session store on Redis (one server and a cluster): the lifecycle, frame admission with its per-session rate
limit, and the capped history."""

from __future__ import annotations

import json
import time

import pytest

from app.services.core.errors import RateLimited, SessionEnded, SessionNotFound, ValidationFailed
from app.services.sessions.keys import session_key
from app.services.sessions.store import FrameAdmission, SessionStore
from app.services.sessions.write_behind import PendingWrite
from tests.conftest import DirectRedis, both_redis_backends

pytestmark = both_redis_backends
MADE_UP_ID = "A" * 32  # the issued shape, never issued


async def test_a_created_session_reads_back_and_lives_for_its_ttl(
    session_store: SessionStore, direct_redis: DirectRedis
) -> None:
    created = await session_store.create({"route": "A7"}, ttl_seconds=None)
    read = await session_store.get(created.session_id)
    assert read == created and read.status == "created" and read.ttl_seconds == 60
    assert 58 <= direct_redis.ttl(session_key(created.session_id)) <= 60


async def test_a_ttl_over_the_maximum_is_refused_before_anything_is_written(session_store: SessionStore) -> None:
    with pytest.raises(ValidationFailed):
        await session_store.create({}, ttl_seconds=3601)


async def test_frames_past_the_burst_are_rate_limited_with_a_retry_after(session_store: SessionStore) -> None:
    session = await session_store.create({}, ttl_seconds=None)
    for _ in range(2):
        assert await session_store.admit_frame(session.session_id) == FrameAdmission(verified=True, tenant="local")
    with pytest.raises(RateLimited) as limited:
        await session_store.admit_frame(session.session_id)
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 1
    assert (await session_store.get(session.session_id)).status == "active"


async def test_an_ended_session_refuses_frames_and_an_unknown_one_is_not_found(session_store: SessionStore) -> None:
    session = await session_store.create({}, ttl_seconds=None)
    ended = await session_store.end(session.session_id)
    assert ended.status == "ended" and ended.expires_at <= ended.last_activity + 30 + 1
    with pytest.raises(SessionEnded):
        await session_store.admit_frame(session.session_id)
    with pytest.raises(SessionNotFound):
        await session_store.admit_frame(MADE_UP_ID)
    with pytest.raises(SessionNotFound):
        await session_store.end(MADE_UP_ID)


async def test_recorded_frames_are_counted_and_the_history_is_newest_first_and_capped(
    session_store: SessionStore,
) -> None:
    session = await session_store.create({}, ttl_seconds=None)
    admitted = FrameAdmission(verified=True)
    counts = [await session_store.record_detection(session.session_id, {"n": n}, admitted) for n in range(4)]
    assert counts == [1, 2, 3, 4]
    items, total = await session_store.history(session.session_id, limit=10, offset=0)
    assert total == 3 and [item["n"] for item in items] == [3, 2, 1]
    assert (await session_store.get(session.session_id)).frame_count == 4


async def test_another_tenants_session_is_unknown_to_every_call_and_stays_untouched(
    session_store: SessionStore, direct_redis: DirectRedis
) -> None:
    session = await session_store.create({}, ttl_seconds=None, tenant="fleet-a")
    key = session_key(session.session_id)
    before = direct_redis.hgetall(key)
    assert before["tenant"] == "fleet-a"
    for call in (
        session_store.get(session.session_id, "fleet-b"),
        session_store.admit_frame(session.session_id, "fleet-b"),
        session_store.end(session.session_id, "fleet-b"),
        session_store.history(session.session_id, 10, 0, "fleet-b"),
    ):
        with pytest.raises(SessionNotFound) as refused:
            await call
        assert refused.value.details == {"session_id": session.session_id}
    assert direct_redis.hgetall(key) == before  # nothing admitted, nothing ended
    admitted = await session_store.admit_frame(session.session_id, "fleet-a")
    assert admitted == FrameAdmission(verified=True, tenant="fleet-a")
    assert (await session_store.end(session.session_id, "fleet-a")).status == "ended"
    assert (await session_store.get(session.session_id)).status == "ended"  # None: any tenant (admins)


async def test_a_kept_write_of_another_tenant_is_not_replayed_into_the_session(
    session_store: SessionStore, direct_redis: DirectRedis
) -> None:
    """A frame served unverified while Redis was down was never checked against its session's owner: its replay
    is, and finds the session gone for it."""
    session = await session_store.create({}, ttl_seconds=None, tenant="fleet-a")
    entry = json.dumps({"request_id": "r1", "detections": []})
    foreign = PendingWrite(session.session_id, entry, counts_frame=True, at=time.time(), owner="fleet-b")
    assert await session_store.write_kept(foreign) == 0
    assert direct_redis.llen(f"{session_key(session.session_id)}:history") == 0
    own = PendingWrite(session.session_id, entry, counts_frame=True, at=time.time(), owner="fleet-a")
    assert await session_store.write_kept(own) == 1
