"""One session driven from two API processes at once, on one Redis: association is atomic per session, so a
hazard seen in every frame is one hazard, confirmed (and alerted) exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

_, FRAME = scene_with_hazards(seed=5, size=(640, 360))
FRAMES = 24
IN_FLIGHT = 6  # a camera streaming faster than answers come back: frames overlap, and land on either replica
START = 1_760_000_000.0


@pytest.fixture(scope="module")
def two_servers(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    env = {"CLOUDINARY_URL": "", "LOG_LEVEL": "WARNING", "REQUEST_TIMEOUT_SECONDS": "30", "TRACK_MIN_HITS": "3"}
    servers = [Server(redis_server.url, tmp_path_factory.mktemp(f"api-{n}"), **env) for n in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.timeout(120)
async def test_frames_of_one_session_at_two_replicas_at_once_make_each_hazard_once(two_servers: list[Server]) -> None:
    first, second = two_servers
    async with httpx.AsyncClient(timeout=60) as client:
        created = await client.post(f"{first.base_url}/sessions")
        session_id = created.json()["session_id"]

        async def send(index: int) -> dict:  # type: ignore[type-arg]
            server = two_servers[index % 2]
            captured_at = datetime.fromtimestamp(START + index / 15, UTC).isoformat()
            response = await client.post(
                f"{server.base_url}/detect/{session_id}",
                params={"captured_at": captured_at, "lat": 52.52, "lon": 13.405},
                content=FRAME,
                headers={"content-type": "image/jpeg"},
            )
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        in_flight = asyncio.Semaphore(IN_FLIGHT)

        async def send_in_turn(index: int) -> dict:  # type: ignore[type-arg]
            async with in_flight:
                return await send(index)

        answers = await asyncio.gather(*(send_in_turn(index) for index in range(FRAMES)))
        hazards = (await client.get(f"{second.base_url}/sessions/{session_id}/hazards")).json()["hazards"]

    per_frame = {len(answer["detections"]) for answer in answers}
    assert len(per_frame) == 1 and per_frame.pop() >= 1  # the same frame, the same detections every time
    ids = Counter(d["hazard_id"] for answer in answers for d in answer["detections"])
    alerts = Counter(d["hazard_id"] for answer in answers for d in answer["detections"] if d["new_hazard"])
    assert set(ids.values()) == {FRAMES}  # every detection joined its one hazard, in every frame
    assert alerts == Counter(dict.fromkeys(ids, 1))  # each confirmed exactly once, by one of the replicas
    assert sorted(h["hazard_id"] for h in hazards) == sorted(ids)
    assert all(h["frames"] == FRAMES and h["location"] == {"lat": 52.52, "lon": 13.405} for h in hazards)
