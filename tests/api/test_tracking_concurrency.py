"""One session driven from two API processes at once, on one Redis, over HTTP and over two frame streams:
association is atomic per session, so a hazard seen in every frame is one hazard, confirmed (and alerted) exactly
once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hazard_client.client import AsyncHazardClient
from hazard_client.sources import video_frames
from tests.support.drives import Route, write_video
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

_, FRAME = scene_with_hazards(seed=5, size=(640, 360))
FRAMES = 24
IN_FLIGHT = 6  # a camera streaming faster than answers come back: frames overlap, and land on either replica
START = 1_760_000_000.0
DRIVE_FPS = 12


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


@pytest.mark.timeout(120)
async def test_two_streams_of_one_session_at_two_replicas_keep_one_hazard_id_per_hazard(
    two_servers: list[Server], tmp_path: Path
) -> None:
    """A drive's frames, interleaved over two WebSocket streams of one session, one at each replica: each hazard
    gets one id across both streams, confirmed once."""
    route = Route(speed_mps=1.0)
    frames = list(video_frames(str(write_video(tmp_path / "drive.mp4", seconds=1.0, fps=DRIVE_FPS, size=(640, 360)))))
    async with (
        AsyncHazardClient(two_servers[0].base_url) as first,
        AsyncHazardClient(two_servers[1].base_url) as second,
    ):
        session_id = (await first.create_session()).session_id

        async def stream_half(client: AsyncHazardClient, parity: int) -> list[dict[str, Any]]:
            answers = []
            async with client.stream(session_id) as stream:
                for index in range(parity, len(frames), 2):  # even frames at one replica, odd at the other
                    image, seconds = frames[index]
                    t = route.start + (seconds or index / DRIVE_FPS)
                    lat, lon = route.at(t)
                    captured_at = datetime.fromtimestamp(t, UTC).isoformat()
                    await stream.send(image, index, lat=lat, lon=lon, heading=route.heading, captured_at=captured_at)
                    answers.append(await stream.receive())
            return answers

        halves = await asyncio.gather(stream_half(first, 0), stream_half(second, 1))
    for answers in halves:
        assert all("detections" in answer for answer in answers), answers
    per_stream = [{d["hazard_id"] for answer in answers for d in answer["detections"]} for answers in halves]
    most = max(len(answer["detections"]) for answers in halves for answer in answers)
    assert most >= 1 and per_stream[0] == per_stream[1] and len(per_stream[0]) == most  # no hazard split in two
    detections = [d for answers in halves for answer in answers for d in answer["detections"]]
    frames_of = Counter(d["hazard_id"] for d in detections)
    alerts = Counter(d["hazard_id"] for d in detections if d["new_hazard"])
    # Each hazard seen in TRACK_MIN_HITS frames confirmed exactly once, by one of the replicas; one seen in fewer (a
    # detection near the threshold, in a frame or two) never.
    assert alerts and alerts == Counter({hazard: 1 for hazard, frames in frames_of.items() if frames >= 3}), frames_of
