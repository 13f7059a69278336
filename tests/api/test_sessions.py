"""Session lifecycle through HTTP, checked against what is really in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest

from app.services.sessions.keys import session_key
from app.services.sessions.store import FrameAdmission
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp, both_redis_backends
from tests.support.images import scene_with_hazards

pytestmark = both_redis_backends
MakeSettings = Callable[..., Settings]
StartApp = Callable[..., Awaitable[RunningApp]]

SESSION_FIELDS = {
    "session_id",
    "status",
    "metadata",
    "created_at",
    "last_activity",
    "expires_at",
    "ttl_seconds",
    "frame_count",
}
_, FRAME = scene_with_hazards(seed=3, size=(640, 360))


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def post_frame(api: RunningApp, session_id: str) -> dict:  # type: ignore[type-arg]
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_created_session_has_the_session_shape_and_lives_in_redis(
    api: RunningApp, direct_redis: DirectRedis
) -> None:
    response = await api.client.post("/sessions", json={"metadata": {"vehicle": "van-7"}, "ttl_seconds": 120})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == SESSION_FIELDS
    assert body["status"] == "created" and body["metadata"] == {"vehicle": "van-7"} and body["frame_count"] == 0
    assert len(body["session_id"]) >= 32  # 24 random bytes, URL-safe: well over 128 bits
    stored = direct_redis.hgetall(session_key(body["session_id"]))
    assert stored["status"] == "created"
    assert float(stored["expires_at"]) == pytest.approx(timestamp(body["expires_at"]), abs=0.01)
    assert 118 <= direct_redis.ttl(session_key(body["session_id"])) <= 120


async def test_session_ids_are_unique(start_app: StartApp, make_settings: MakeSettings) -> None:
    # Uniqueness is under test, not timeouts: on a loaded machine, 20 creations at once once met a 0.5 s Redis stall
    # and were answered 503 SESSION_STORE_UNAVAILABLE, as documented (tests/api/test_resilience.py covers that).
    api = await start_app(make_settings(redis_socket_timeout_seconds=5))
    ids = await asyncio.gather(*(api.new_session() for _ in range(20)))
    assert len(set(ids)) == 20


async def test_ttl_override_above_the_maximum_is_refused(start_app, make_settings) -> None:  # type: ignore[no-untyped-def]
    api = await start_app(make_settings(session_max_ttl_seconds=600, session_ttl_seconds=60))
    response = await api.client.post("/sessions", json={"ttl_seconds": 601})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await api.client.post("/sessions", json={"ttl_seconds": 600})).status_code == 201


async def test_detection_slides_the_ttl_and_expiry_removes_the_session(
    api: RunningApp, direct_redis: DirectRedis
) -> None:
    session_id = await api.new_session(ttl_seconds=2)
    await asyncio.sleep(1.2)
    await post_frame(api, session_id)
    ttl_ms = direct_redis.pttl(session_key(session_id))
    assert ttl_ms > 1500, "the frame should have pushed the expiry back to a full TTL"
    session = (await api.client.get(f"/sessions/{session_id}")).json()
    assert session["status"] == "active" and session["frame_count"] == 1
    assert timestamp(session["expires_at"]) - timestamp(session["last_activity"]) == pytest.approx(2, abs=0.01)
    await asyncio.sleep(2.2)
    assert direct_redis.exists(session_key(session_id), f"{session_key(session_id)}:history") == 0
    response = await api.client.get(f"/sessions/{session_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "SESSION_NOT_FOUND"
    detect = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert detect.status_code == 404 and detect.json()["error"]["code"] == "SESSION_NOT_FOUND"


async def test_ended_session_is_readable_for_the_grace_period_then_gone(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    api = await start_app(make_settings(session_ended_grace_seconds=1))
    session_id = await api.new_session()
    await post_frame(api, session_id)
    ended = await api.client.post(f"/sessions/{session_id}/end")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert direct_redis.hget(session_key(session_id), "status") == "ended"
    assert 0 < direct_redis.pttl(f"{session_key(session_id)}:history") <= 1000
    detect = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert detect.status_code == 409 and detect.json()["error"]["code"] == "SESSION_ENDED"
    again = await api.client.post(f"/sessions/{session_id}/end")
    assert again.status_code == 200 and again.json()["expires_at"] == ended.json()["expires_at"]
    assert (await api.client.get(f"/sessions/{session_id}/detections")).json()["total"] == 1
    await asyncio.sleep(1.2)
    assert (await api.client.get(f"/sessions/{session_id}")).status_code == 404


async def test_fifty_concurrent_frames_count_exactly(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    # Counting is under test, not timeouts: on a loaded machine a 0.5 s Redis timeout would send some frames to
    # degraded mode (frame_count null, written later), which other tests cover.
    settings = make_settings(request_timeout_seconds=60, max_request_queue_size=100, redis_socket_timeout_seconds=5)
    api = await start_app(settings)
    session_id = await api.new_session()
    answers = await asyncio.gather(*(post_frame(api, session_id) for _ in range(50)))
    assert not any(a["session"]["degraded"] for a in answers)
    assert sorted(a["session"]["frame_count"] for a in answers) == list(range(1, 51))
    session = (await api.client.get(f"/sessions/{session_id}")).json()
    assert session["frame_count"] == 50
    history = (await api.client.get(f"/sessions/{session_id}/detections", params={"limit": 200})).json()
    assert history["total"] == 50
    assert {item["request_id"] for item in history["items"]} == {a["request_id"] for a in answers}
    assert direct_redis.llen(f"{session_key(session_id)}:history") == 50


async def test_history_is_newest_first_capped_and_paginated(start_app, make_settings) -> None:  # type: ignore[no-untyped-def]
    api = await start_app(make_settings(session_history_limit=3))
    session_id = await api.new_session()
    request_ids = [(await post_frame(api, session_id))["request_id"] for _ in range(5)]
    page = (await api.client.get(f"/sessions/{session_id}/detections", params={"limit": 2})).json()
    assert page["total"] == 3
    assert [item["request_id"] for item in page["items"]] == request_ids[::-1][:2]
    rest = (await api.client.get(f"/sessions/{session_id}/detections", params={"limit": 2, "offset": 2})).json()
    assert [item["request_id"] for item in rest["items"]] == [request_ids[2]]
    item = page["items"][0]
    assert set(item) >= {"request_id", "at", "hazard_counts", "detections", "image", "upload"}
    too_many = await api.client.get(f"/sessions/{session_id}/detections", params={"limit": 4})
    assert too_many.status_code == 422


async def test_frames_over_the_rate_limit_get_429_with_retry_after(start_app, make_settings) -> None:  # type: ignore[no-untyped-def]
    api = await start_app(make_settings(session_rate_limit_per_second=0.5, session_rate_limit_burst=2))
    session_id = await api.new_session()
    await post_frame(api, session_id)
    await post_frame(api, session_id)
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["retry-after"]) <= 2
    other = await api.new_session()
    await post_frame(api, other)  # the limit is per session


async def test_api_view_matches_redis_through_the_whole_lifecycle(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    api = await start_app(make_settings(session_ended_grace_seconds=1))
    redis = direct_redis
    session_id = await api.new_session(ttl_seconds=30, metadata={"route": "A7"})
    key = session_key(session_id)

    async def assert_same() -> dict:  # type: ignore[type-arg]
        view = (await api.client.get(f"/sessions/{session_id}")).json()
        stored = redis.hgetall(key)
        assert view["status"] == stored["status"]
        assert view["frame_count"] == int(stored["frame_count"])
        assert view["metadata"] == {"route": "A7"}
        assert timestamp(view["expires_at"]) == pytest.approx(float(stored["expires_at"]), abs=0.01)
        assert timestamp(view["expires_at"]) - redis_now() == pytest.approx(redis.pttl(key) / 1000, abs=1.0)
        history = (await api.client.get(f"/sessions/{session_id}/detections", params={"limit": 200})).json()
        assert history["total"] == redis.llen(f"{key}:history")
        return view  # type: ignore[no-any-return]

    def redis_now() -> float:
        return redis.time()

    assert (await assert_same())["status"] == "created"
    for _ in range(3):
        await post_frame(api, session_id)
    assert (await assert_same())["frame_count"] == 3
    await api.client.post(f"/sessions/{session_id}/end")
    assert (await assert_same())["status"] == "ended"
    await asyncio.sleep(1.2)
    assert redis.exists(key, f"{key}:history") == 0
    assert (await api.client.get(f"/sessions/{session_id}")).status_code == 404


async def test_replaying_a_write_redis_already_applied_changes_nothing(
    api: RunningApp, direct_redis: DirectRedis
) -> None:
    """A timeout after Redis applied a write keeps it for replay; the replay must not count the frame twice."""
    sessions = api.app.state.parts.sessions
    session_id = await api.new_session()
    entry = {"request_id": "req-1", "hazard_counts": {"pothole": 1}}
    unverified = FrameAdmission(verified=False)
    assert await sessions.record_detection(session_id, entry, unverified)
    assert await sessions.record_detection(session_id, entry, unverified)  # the same write, replayed
    assert direct_redis.llen(f"{session_key(session_id)}:history") == 1
    assert direct_redis.hget(session_key(session_id), "frame_count") == "1"


async def test_more_concurrent_calls_than_connections_wait_for_one(start_app, make_settings) -> None:  # type: ignore[no-untyped-def]
    # A caller waits for a connection up to the socket timeout: 30 calls through 2 connections on a loaded machine
    # (the suite's neighbours) waited past the default 0.5 s. This is about waiting, not how long.
    api = await start_app(make_settings(redis_max_connections=2, redis_socket_timeout_seconds=10))
    session_id = await api.new_session()
    answers = await asyncio.gather(*(api.client.get(f"/sessions/{session_id}") for _ in range(30)))
    assert [answer.status_code for answer in answers] == [200] * 30
    assert api.app.state.parts.sessions.breaker.state == "closed"  # waiting for a connection is no failure
