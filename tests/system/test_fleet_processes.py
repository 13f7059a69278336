"""The fleet with real processes: two API servers on one Redis, steered through either of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

FP16 = "best0408_openvino_model"
INT8 = "best0408_int8_openvino_model"
PASSWORD = "fleet-test-password"
AUTH = ("admin", PASSWORD)
RATE_PER_SECOND = 30
STREAM_SECONDS = 10
ACTIVATE_AFTER_SECONDS = 3
_, FRAME = scene_with_hazards(seed=21, size=(1280, 720))


@dataclass(frozen=True)
class Answer:
    sent_at: float
    done_at: float
    status: int
    model: str | None


@pytest.fixture
def fleet(redis_server: RedisProcess, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    env = {
        "ADMIN_PASSWORD": PASSWORD,
        "FLEET_NAME": f"test-{uuid.uuid4().hex[:8]}",
        "FLEET_HEARTBEAT_SECONDS": "0.5",
        "MODEL_INFERENCE_THREADS": "1",  # two servers share two cores
        "REQUEST_TIMEOUT_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
    }
    servers = (Server(redis_server.url, tmp_path / "a", **env), Server(redis_server.url, tmp_path / "b", **env))
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def send_frame(base_url: str, session_id: str) -> Answer:
    sent_at = time.monotonic()
    response = httpx.post(
        f"{base_url}/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"}, timeout=10
    )
    model = response.json()["model"]["name"] if response.status_code == 200 else None
    return Answer(sent_at, time.monotonic(), response.status_code, model)


def fleet_actives(base_url: str) -> dict[str, str]:
    processes = httpx.get(f"{base_url}/admin/api/fleet", auth=AUTH, timeout=5).json()["processes"]
    return {p["process_id"]: p["active_model"] for p in processes if p["status"] == "running"}


def test_activation_through_one_process_switches_both_under_load(fleet: tuple[Server, Server]) -> None:
    first, second = fleet
    sessions = [
        (server.base_url, httpx.post(f"{server.base_url}/sessions", timeout=5).json()["session_id"])
        for server in fleet
        for _ in range(2)
    ]
    assert set(fleet_actives(first.base_url).values()) == {FP16}
    total = RATE_PER_SECOND * STREAM_SECONDS
    started = time.monotonic()
    activation_sent_at = switched_at = None
    activation = None
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for index in range(total):
            send_at = started + index / RATE_PER_SECOND  # open loop: the schedule does not wait for answers
            if activation_sent_at is None and send_at - started >= ACTIVATE_AFTER_SECONDS:
                activation_sent_at = time.monotonic()
                activation = pool.submit(
                    httpx.post, f"{first.base_url}/admin/api/models/{INT8}/activate", auth=AUTH, timeout=60
                )
            if switched_at is None and activation_sent_at is not None and index % 5 == 0:
                actives = fleet_actives(second.base_url)
                if len(actives) == 2 and set(actives.values()) == {INT8}:
                    switched_at = time.monotonic()
            time.sleep(max(0.0, send_at - time.monotonic()))
            base_url, session_id = sessions[index % len(sessions)]
            futures.append(pool.submit(send_frame, base_url, session_id))
        answers = [future.result(timeout=30) for future in futures]
        assert activation is not None and activation.result(timeout=60).status_code == 200
    assert activation_sent_at is not None and switched_at is not None, "both processes reported the new version"
    assert [a.status for a in answers if a.status != 200] == []
    assert {a.model for a in answers} == {FP16, INT8}
    before = [a for a in answers if a.done_at < activation_sent_at]
    after = [a for a in answers if a.sent_at > switched_at]
    assert before and after
    assert {a.model for a in before} == {FP16}, "nothing ran on INT8 before anyone asked for it"
    assert {a.model for a in after} == {INT8}, "once the fleet switched, every frame ran on INT8"
    for server in fleet:  # each process answers with the new version on its own
        session_id = httpx.post(f"{server.base_url}/sessions", timeout=5).json()["session_id"]
        assert send_frame(server.base_url, session_id).model == INT8
        assert PASSWORD not in server.log_path.read_text(), "the operator password never reaches a log"
