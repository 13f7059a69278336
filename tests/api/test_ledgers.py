"""Ledgers that must not drift: frame_count counts served frames, kept writes survive a stop with Redis down, and
frames for made-up ids never push out a real session's kept writes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from app.services.sessions.keys import session_key
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_for

MakeSettings = Callable[..., Settings]
StartApp = Callable[..., Awaitable[RunningApp]]
_, FRAME = scene_with_hazards(seed=19, size=(640, 360))
JPEG = {"content-type": "image/jpeg"}


async def test_frame_count_counts_served_frames_not_admissions(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    api = await start_app(make_settings(session_rate_limit_burst=100))
    session_id = await api.new_session()
    for _ in range(70):
        refused = await api.client.post(f"/detect/{session_id}", content=b"not an image", headers=JPEG)
        assert refused.status_code == 400
    served = await api.client.post(f"/detect/{session_id}", content=FRAME, headers=JPEG)
    assert served.status_code == 200 and served.json()["session"]["frame_count"] == 1
    assert (await api.client.get(f"/sessions/{session_id}")).json()["frame_count"] == 1
    assert direct_redis.hget(session_key(session_id), "frame_count") == "1"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of the test's own, persistent like a production one; requested before the app, so it outlives it."""
    server = RedisProcess(tmp_path / "redis", persistent=True)
    server.start()
    yield server
    server.kill()


async def test_kept_writes_survive_a_stop_with_redis_down(
    own_redis: RedisProcess, start_app: StartApp, make_settings: MakeSettings
) -> None:
    redis = own_redis
    settings = make_settings(redis_url=redis.url, breaker_fail_max=1, upload_flush_seconds=0)
    first = await start_app(settings)
    session_id = await first.new_session()
    redis.kill()
    for _ in range(5):
        answer = await first.client.post(f"/detect/{session_id}", content=FRAME, headers=JPEG)
        assert answer.status_code == 200 and answer.json()["session"]["degraded"]
    await first.app.state.lifecycle.stop()  # SIGTERM's path: the writes Redis could not take go to disk
    saved = settings.uploads.spool_dir / "pending-writes.jsonl"
    assert len(saved.read_text().splitlines()) == 5
    assert all(json.loads(line)["verified"] for line in saved.read_text().splitlines())

    redis.start()
    second = await start_app(settings)

    async def replayed() -> bool:
        response = await second.client.get(f"/sessions/{session_id}")
        return response.status_code == 200 and bool(response.json()["frame_count"] == 5)

    await wait_for(replayed, "the saved writes replayed by the next process")
    history = (await second.client.get(f"/sessions/{session_id}/detections")).json()
    assert history["total"] == 5 and all(item["degraded"] for item in history["items"])
    assert not saved.exists()


async def test_frames_for_made_up_ids_never_evict_a_real_sessions_kept_writes(
    own_redis: RedisProcess, start_app: StartApp, make_settings: MakeSettings
) -> None:
    redis = own_redis
    api = await start_app(make_settings(redis_url=redis.url, breaker_fail_max=1, pending_writes_limit=10))
    sessions = api.app.state.parts.sessions
    real = await api.new_session()
    assert (await api.client.post(f"/detect/{real}", content=FRAME, headers=JPEG)).status_code == 200
    redis.kill()
    for _ in range(4):
        assert (await api.client.post(f"/detect/{real}", content=FRAME, headers=JPEG)).status_code == 200
    made_up = [f"{'A' * 31}{index}" for index in range(10)]  # the issued shape, never issued
    for session_id in made_up:
        assert (await api.client.post(f"/detect/{session_id}", content=FRAME, headers=JPEG)).status_code == 200
    kept = list(sessions.pending)
    assert sum(write.session_id == real for write in kept) == 4  # every real write still there
    assert len(kept) == 10 and sessions.pending.dropped == 4  # room was made from the made-up ones only
    redis.start()  # back before the app stops
