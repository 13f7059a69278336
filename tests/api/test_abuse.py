"""Cheap requests that cost the service dearly: a decode-cost bomb, a session-creation flood, deep-probe bursts."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from PIL import Image

from app.services.core.errors import DeadlineExceeded
from app.services.inference.types import DetectOptions
from app.services.sessions.admission import creation_key
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp
from tests.support.images import scene_with_hazards

MakeSettings = Callable[..., Settings]
StartApp = Callable[..., Awaitable[RunningApp]]
_, FRAME = scene_with_hazards(seed=23, size=(640, 360))


def lossless_webp(width: int, height: int) -> bytes:
    """A few hundred bytes of one-colour lossless WebP: cheap to send, ~0.9 s of CPU to decode at 6000x6600."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 40, 40)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


BOMB = lossless_webp(6000, 6600)  # 39.6 MP: under MAX_IMAGE_PIXELS (40 MP)


async def timed_post(api: RunningApp, session_id: str, body: bytes, media_type: str) -> tuple[int, float]:
    started = time.monotonic()
    response = await api.client.post(f"/detect/{session_id}", content=body, headers={"content-type": media_type})
    return response.status_code, time.monotonic() - started


@pytest.mark.timeout(60)
async def test_decode_cost_bomb_is_refused_cheaply_and_other_sessions_are_served(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    assert len(BOMB) < 4096
    api = await start_app(make_settings(request_timeout_seconds=1.0))
    attacker = await api.new_session()
    victims = [await api.new_session() for _ in range(4)]

    async def attack() -> list[tuple[int, float]]:
        sent = []
        for _ in range(50):  # 25/s for 2 s: inside the session's rate limit
            sent.append(asyncio.create_task(timed_post(api, attacker, BOMB, "image/webp")))
            await asyncio.sleep(1 / 25)
        return list(await asyncio.gather(*sent))

    async def camera(session_id: str) -> list[tuple[int, float]]:
        sent = []
        for _ in range(10):  # 5/s for 2 s
            sent.append(asyncio.create_task(timed_post(api, session_id, FRAME, "image/jpeg")))
            await asyncio.sleep(1 / 5)
        return list(await asyncio.gather(*sent))

    attacked, *watched = await asyncio.gather(attack(), *(camera(victim) for victim in victims))
    assert {status for status, _ in attacked} == {413}
    refusal = sorted(elapsed for _, elapsed in attacked)[len(attacked) // 2]
    assert refusal < 0.1, f"median refusal took {refusal:.3f} s"  # refused from the header, nothing decoded
    victim_statuses = [status for answers in watched for status, _ in answers]
    assert victim_statuses.count(200) == len(victim_statuses), victim_statuses
    error = (await api.client.post(f"/detect/{attacker}", content=BOMB, headers={"content-type": "image/webp"})).json()
    assert error["error"]["code"] == "IMAGE_TOO_LARGE" and error["error"]["details"]["max_decode_pixels"] > 0


async def test_a_frame_past_its_deadline_never_starts_a_decode(api: RunningApp) -> None:
    engine = api.app.state.runtime.registry.active_engine
    before = engine.stats()
    with pytest.raises(DeadlineExceeded):
        await engine.detect(FRAME, DetectOptions(), time.monotonic() - 0.001)
    after = engine.stats()
    assert (after.expired, after.completed) == (before.expired + 1, before.completed)


async def create(api: RunningApp, forwarded: str | None = None, **body: Any) -> Any:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return await api.client.post("/sessions", json=body or None, headers=headers)


async def test_session_creation_is_limited_per_client_with_retry_after(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    api = await start_app(make_settings(session_create_burst=3, session_create_rate_per_minute=6))
    for _ in range(3):
        assert (await create(api)).status_code == 201
    refused = await create(api, forwarded="203.0.113.9")  # a forwarded header from an untrusted peer changes nothing
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 10  # one session per 10 s
    settings = api.app.state.runtime.settings
    key = creation_key(settings.fleet_name, "127.0.0.1")
    assert 0 < direct_redis.ttl(key) <= 3601  # the counter goes away once both buckets are full again (<= 1 h)


async def test_a_trusted_proxys_forwarded_address_is_the_client(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    api = await start_app(
        make_settings(
            session_create_burst=2,
            session_create_rate_per_minute=6,
            client_address_header="x-forwarded-for",
            trusted_proxies="127.0.0.1, 10.0.0.0/8",
        )
    )
    for _ in range(2):
        assert (await create(api, forwarded="203.0.113.7, 10.1.2.3")).status_code == 201
    assert (await create(api, forwarded="203.0.113.7")).status_code == 429
    # Another client behind the same proxy has a budget of its own; the client cannot spoof its way past the
    # proxy's own entry (the rightmost address that is not a proxy counts).
    assert (await create(api, forwarded="198.51.100.1")).status_code == 201
    assert (await create(api, forwarded="198.51.100.2, 203.0.113.7")).status_code == 429


async def test_long_ttls_spend_the_clients_ttl_budget(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(session_create_ttl_budget_seconds=2 * 3600))
    assert (await create(api, ttl_seconds=3600)).status_code == 201
    assert (await create(api, ttl_seconds=3600)).status_code == 201
    over = await create(api, ttl_seconds=3600)
    assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1000  # an hour of budget refills in 30 min


async def test_a_burst_of_deep_probes_runs_one_inference(api: RunningApp) -> None:
    runtime = api.app.state.runtime
    completed = runtime.registry.active_engine.stats().completed
    answers = await asyncio.gather(*(api.client.get("/health/deep") for _ in range(30)))
    assert {answer.status_code for answer in answers} == {200}
    assert runtime.health.deep_runs == 1
    assert runtime.registry.active_engine.stats().completed == completed + 1
    assert max(answer.json()["age_seconds"] for answer in answers) < runtime.settings.health_deep_cache_seconds
