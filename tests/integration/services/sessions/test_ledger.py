"""The session's uploads ledger on Redis (one server and a cluster): an outcome lives exactly as long as its session,
and none is written for a session that is gone."""

from __future__ import annotations

from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.keys import session_key
from app.services.sessions.ledger import UploadLedger
from app.services.sessions.store import SessionStore
from tests.conftest import DirectRedis, both_redis_backends

pytestmark = both_redis_backends


async def test_an_upload_outcome_is_kept_with_the_sessions_ttl(
    session_redis: GuardedRedis, session_store: SessionStore, direct_redis: DirectRedis
) -> None:
    session = await session_store.create({}, ttl_seconds=None)
    await UploadLedger(session_redis).record(session.session_id, "media-1", "uploaded:https://example/1.jpg")
    uploads_key = f"{session_key(session.session_id)}:uploads"
    assert direct_redis.hgetall(uploads_key) == {"media-1": "uploaded:https://example/1.jpg"}
    assert 0 < direct_redis.ttl(uploads_key) <= direct_redis.ttl(session_key(session.session_id))


async def test_no_outcome_is_written_for_a_session_that_is_gone(
    session_redis: GuardedRedis, direct_redis: DirectRedis
) -> None:
    session_id = "B" * 32  # the issued shape, never issued
    await UploadLedger(session_redis).record(session_id, "media-1", "uploaded:https://example/1.jpg")
    assert direct_redis.exists(f"{session_key(session_id)}:uploads") == 0
