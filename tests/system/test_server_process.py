"""The app as operators run it: a real uvicorn process, real signals, structured logs on stdout."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis

from app.services.sessions.keys import session_key
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server

ROOT = Path(__file__).resolve().parents[2]
_, FRAME = scene_with_hazards(seed=13, size=(1280, 720))


@pytest.fixture
def server(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Server]:
    running = Server(redis_server.url, tmp_path, MODEL_MAX_CONCURRENT="1", REQUEST_TIMEOUT_SECONDS="30")
    running.wait_ready()
    yield running
    running.stop()


def post_frame(base_url: str, session_id: str) -> int | str:
    """The answer's status, or "refused" when the server closed the connection without answering."""
    try:
        response = httpx.post(
            f"{base_url}/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"}, timeout=30
        )
    except httpx.TransportError:
        return "refused"
    return response.status_code


def frame_count(client: redis.Redis, session_id: str) -> int:
    # redis-py types sync and async replies as one union; this client is synchronous, so it is a str or None.
    return int(cast("str | None", client.hget(session_key(session_id), "frame_count")) or 0)


def test_sigterm_answers_every_accepted_frame_and_refuses_the_rest(server: Server, redis_server: RedisProcess) -> None:
    session_id = httpx.post(f"{server.base_url}/sessions").json()["session_id"]
    client = redis_server.client()
    with ThreadPoolExecutor(max_workers=40) as pool:
        in_flight = [pool.submit(post_frame, server.base_url, session_id) for _ in range(40)]
        deadline = time.monotonic() + 20
        while frame_count(client, session_id) < 8 and time.monotonic() < deadline:
            time.sleep(0.002)
        accepted_at_signal = frame_count(client, session_id)
        server.process.send_signal(signal.SIGTERM)
        outcomes = [future.result() for future in in_flight]
    served = outcomes.count(200)
    # Frames the server had taken in finish with 200; later ones are refused at the door, never a 5xx.
    assert set(outcomes) <= {200, "refused"}, outcomes
    assert served >= accepted_at_signal >= 8
    assert frame_count(client, session_id) == served
    # uvicorn re-raises the signal after a clean shutdown, so a graceful exit reads as "killed by SIGTERM".
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/health/live", timeout=1)
    events = [line["event"] for line in server.log_lines()]
    assert "shutdown_stats" in events


def test_logs_are_json_lines_with_request_context_and_no_secrets(server: Server) -> None:
    session_id = httpx.post(f"{server.base_url}/sessions").json()["session_id"]
    response = httpx.post(
        f"{server.base_url}/detect/{session_id}",
        content=FRAME,
        headers={"content-type": "image/jpeg", "x-request-id": "trace-me-1"},
        timeout=30,
    )
    assert response.status_code == 200
    httpx.post(f"{server.base_url}/detect/unknown-session", content=FRAME, headers={"content-type": "image/jpeg"})
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    lines = server.log_lines()
    access = [line for line in lines if line.get("event") == "request" and line.get("request_id") == "trace-me-1"]
    assert len(access) == 1
    line = access[0]
    assert line["route"] == "/detect/{session_id}" and line["status"] == 200 and line["latency_ms"] > 0
    assert line["session_id"] == session_id and set(line["timings_ms"]) >= {"infer", "decode"}
    assert any(entry.get("status") == 404 and entry.get("code") == "SESSION_NOT_FOUND" for entry in lines)
    text = server.log_path.read_text()
    assert "never-log-this-secret" not in text
    assert FRAME[:64].hex() not in text


def wait_for_log_line(server: Server, text: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while text not in server.log_path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {text!r} within {within} s:\n{server.log_path.read_text()}")
        time.sleep(0.02)


@pytest.mark.parametrize("access_log_flag", ["--no-access-log", "--access-log"])
def test_each_request_writes_exactly_one_log_line(
    redis_server: RedisProcess, tmp_path: Path, access_log_flag: str
) -> None:
    # uvicorn writes its own access line whenever `uvicorn.access` has a handler, even a root one it
    # propagates to, whatever its flags say: only our `request` line may remain.
    server = Server(redis_server.url, tmp_path, access_log_flag)
    try:
        assert_one_line_per_request(server)
    finally:
        server.stop()


def assert_one_line_per_request(server: Server) -> None:
    server.wait_ready()
    first = httpx.post(f"{server.base_url}/sessions", headers={"x-request-id": "logged-once-1"}, timeout=10)
    assert first.status_code == 201
    wait_for_log_line(server, "logged-once-1")
    # Lines are written in order through one handler: once the next request's line is there, every line
    # the first request could cause (uvicorn's access line is written before ours) is there too.
    second = httpx.get(f"{server.base_url}/health/live", headers={"x-request-id": "logged-once-2"}, timeout=10)
    assert second.status_code == 200
    wait_for_log_line(server, "logged-once-2")
    text = server.log_path.read_text()
    lines = [line for line in text.splitlines() if "logged-once-1" in line]
    assert len(lines) == 1, text
    assert json.loads(lines[0])["event"] == "request"
