"""What a frame may cost before it is decoded: a decode-cost bomb is refused from its header while other sessions
are served, and a frame past its deadline never starts a decode."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable

import pytest
from PIL import Image

from app.services.core.errors import DeadlineExceeded
from app.services.inference.types import DetectOptions
from app.settings import Settings
from tests.conftest import RunningApp
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
@pytest.mark.serial  # frames at a steady rate, a 1 s request timeout, a median refusal in 0.1 s: timed, so alone
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
    engine = api.app.state.parts.models.registry.active_engine
    before = engine.stats()
    with pytest.raises(DeadlineExceeded):
        await engine.detect(FRAME, DetectOptions(), time.monotonic() - 0.001)
    after = engine.stats()
    assert (after.expired, after.completed) == (before.expired + 1, before.completed)
