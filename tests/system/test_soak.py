"""A soak against a real server process: steady frames over many short-lived sessions. After warm-up its RSS grows
by less than 5 %, its open descriptors stay flat, and every Redis key of every expired session is gone.

SOAK_SECONDS long (25 s in the suite; `make soak` runs the 10 minutes of the original finding).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.services.sessions.keys import session_key
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "25"))
WARM_UP_SECONDS = min(60.0, SOAK_SECONDS * 0.4)
SESSION_TTL_SECONDS = 2
FRAMES_PER_SESSION = 4
_, FRAME = scene_with_hazards(seed=29, size=(640, 360))


class HazardApi(Server):
    launcher = (sys.executable, "-m", "app")  # the launcher operators run, with its connection bounds


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(SOAK_SECONDS + 90)
def test_soak_keeps_memory_and_descriptors_flat_and_leaves_no_keys(redis_server: RedisProcess, tmp_path: Path) -> None:
    server = HazardApi(
        redis_server.url,
        tmp_path,
        CLOUDINARY_URL="",
        LOG_LEVEL="WARNING",
        SESSION_CREATE_BURST="100000",
        SESSION_CREATE_RATE_PER_MINUTE="100000",
    )
    created: list[str] = []
    try:
        server.wait_ready()
        pid = server.process.pid
        started = time.monotonic()
        warm: tuple[int, int] | None = None
        statuses: dict[int, int] = {}
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            while time.monotonic() - started < SOAK_SECONDS:
                if warm is None and time.monotonic() - started >= WARM_UP_SECONDS:
                    warm = (rss_kib(pid), open_descriptors(pid))
                response = client.post("/sessions", json={"ttl_seconds": SESSION_TTL_SECONDS})
                assert response.status_code == 201, response.text
                session_id = response.json()["session_id"]
                created.append(session_id)
                for _ in range(FRAMES_PER_SESSION):
                    answer = client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                client.get(f"/sessions/{session_id}/detections")
        assert warm is not None
        rss, descriptors = rss_kib(pid), open_descriptors(pid)
        assert set(statuses) == {200}, statuses
        assert rss < warm[0] * 1.05, f"RSS grew from {warm[0]} KiB to {rss} KiB after warm-up"
        assert descriptors <= warm[1] + 5, f"open descriptors went from {warm[1]} to {descriptors}"
        # Every key of every session is gone once its TTL has passed (Redis expires them: no index keeps any).
        client_redis = redis_server.client()
        deadline = time.monotonic() + SESSION_TTL_SECONDS + 10
        keys = [
            key for session_id in created for key in (session_key(session_id), f"{session_key(session_id)}:history")
        ]
        keys += [f"{session_key(session_id)}:uploads" for session_id in created]
        while any(client_redis.exists(*keys[index : index + 500]) for index in range(0, len(keys), 500)):
            assert time.monotonic() < deadline, "keys of expired sessions are still in Redis"
            time.sleep(0.2)
        print(  # the figures a soak is run for
            f"soak: {len(created)} sessions, {sum(statuses.values())} frames in {SOAK_SECONDS:.0f} s; "
            f"RSS {warm[0]} -> {rss} KiB, descriptors {warm[1]} -> {descriptors}"
        )
    finally:
        server.stop()
