"""The fleet with real processes: two API servers on one Redis, steered through either of them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

# Frames at a steady rate through a swap's compile: another test's CPU beside it would shed them.
pytestmark = pytest.mark.serial

FP16 = "best0408_openvino_model"
INT8 = "best0408_int8_openvino_model"
PASSWORD = "fleet-test-password"
AUTH = ("admin", PASSWORD)
RATE_PER_SECOND = 16  # two servers on two cores: room left for the swap's compile (30/s left none: frames queued, shed)
STREAM_SECONDS = 10
ACTIVATE_AFTER_SECONDS = 3
_, FRAME = scene_with_hazards(seed=21, size=(1280, 720))


@dataclass(frozen=True)
class Answer:
    sent_at: float
    done_at: float
    status: int
    model: str | None
    error_code: str | None


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


def send_frame(client: httpx.Client, base_url: str, session_id: str) -> Answer:
    sent_at = time.monotonic()
    response = client.post(
        f"{base_url}/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"}, timeout=10
    )
    body = response.json()
    model = body["model"]["name"] if response.status_code == 200 else None
    error_code = None if response.status_code == 200 else body["error"]["code"]
    return Answer(sent_at, time.monotonic(), response.status_code, model, error_code)


def fleet_actives(client: httpx.Client, base_url: str) -> dict[str, str]:
    processes = client.get(f"{base_url}/admin/api/fleet", auth=AUTH, timeout=5).json()["processes"]
    return {p["process_id"]: p["active_model"] for p in processes if p["status"] == "running"}


def watch_switch(client: httpx.Client, base_url: str, stop: threading.Event) -> float | None:
    """When both processes first report INT8, as the second one sees the fleet; polled beside the frames so the
    frames' schedule never waits on it (a schedule that falls behind catches up in a burst the engines shed)."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        actives = fleet_actives(client, base_url)
        if len(actives) == 2 and set(actives.values()) == {INT8}:
            return time.monotonic()
        stop.wait(0.2)
    return None


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """One pooled client for every call: a client per frame builds a TLS context each time, CPU that the two servers
    need on two cores (with one per frame, the servers shed frames as OVERLOADED before any swap)."""
    with httpx.Client(limits=httpx.Limits(max_connections=32)) as pooled:
        yield pooled


def test_activation_through_one_process_switches_both_under_load(
    fleet: tuple[Server, Server], client: httpx.Client
) -> None:
    first, second = fleet
    sessions = [
        (server.base_url, client.post(f"{server.base_url}/sessions", timeout=5).json()["session_id"])
        for server in fleet
        for _ in range(2)
    ]
    assert set(fleet_actives(client, first.base_url).values()) == {FP16}
    total = RATE_PER_SECOND * STREAM_SECONDS
    started = time.monotonic()
    activation_sent_at: float | None = None
    activation: Future[httpx.Response] | None = None
    switch: Future[float | None] | None = None
    stop_watching = threading.Event()
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for index in range(total):
            send_at = started + index / RATE_PER_SECOND  # open loop: the schedule does not wait for answers
            if activation_sent_at is None and send_at - started >= ACTIVATE_AFTER_SECONDS:
                activation_sent_at = time.monotonic()
                activation = pool.submit(
                    client.post, f"{first.base_url}/admin/api/models/{INT8}/activate", auth=AUTH, timeout=60
                )
                switch = pool.submit(watch_switch, client, second.base_url, stop_watching)
            time.sleep(max(0.0, send_at - time.monotonic()))
            base_url, session_id = sessions[index % len(sessions)]
            futures.append(pool.submit(send_frame, client, base_url, session_id))
        answers = [future.result(timeout=30) for future in futures]
        assert activation is not None and activation.result(timeout=60).status_code == 200
        assert switch is not None
        stop_watching.set()
        switched_at = switch.result(timeout=10)
    assert activation_sent_at is not None and switched_at is not None, "both processes reported the new version"
    assert [(a.status, a.error_code) for a in answers if a.status != 200] == []
    assert {a.model for a in answers} == {FP16, INT8}
    before = [a for a in answers if a.done_at < activation_sent_at]
    after = [a for a in answers if a.sent_at > switched_at]
    assert before and after
    assert {a.model for a in before} == {FP16}, "nothing ran on INT8 before anyone asked for it"
    assert {a.model for a in after} == {INT8}, "once the fleet switched, every frame ran on INT8"
    for server in fleet:  # each process answers with the new version on its own
        session_id = client.post(f"{server.base_url}/sessions", timeout=5).json()["session_id"]
        assert send_frame(client, server.base_url, session_id).model == INT8
        assert PASSWORD not in server.log_path.read_text(), "the operator password never reaches a log"
