"""The app as operators run it: a real uvicorn process, real signals, structured logs on stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_DIR
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
_, FRAME = scene_with_hazards(seed=13, size=(1280, 720))


class Server:
    def __init__(self, redis_url: str, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "server.log"
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MODEL_DIR": str(MODEL_DIR),
            "STORAGE_DIR": str(tmp_path / "uploads"),
            "SPOOL_DIR": str(tmp_path / "spool"),
            "LOG_LEVEL": "INFO",
            "CLOUDINARY_URL": "cloudinary://123456:never-log-this-secret@demo?upload_prefix=http://127.0.0.1:9",
            **env,
        }
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--no-access-log", "--timeout-graceful-shutdown", "20"]
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.log_path.read_text())

    def log_lines(self) -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


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


def test_sigterm_answers_every_accepted_frame_and_refuses_the_rest(server: Server, redis_server: RedisProcess) -> None:
    session_id = httpx.post(f"{server.base_url}/sessions").json()["session_id"]
    redis = redis_server.client()
    with ThreadPoolExecutor(max_workers=40) as pool:
        in_flight = [pool.submit(post_frame, server.base_url, session_id) for _ in range(40)]
        deadline = time.monotonic() + 20
        while int(redis.hget(f"session:{session_id}", "frame_count") or 0) < 8 and time.monotonic() < deadline:
            time.sleep(0.002)
        accepted_at_signal = int(redis.hget(f"session:{session_id}", "frame_count") or 0)
        server.process.send_signal(signal.SIGTERM)
        outcomes = [future.result() for future in in_flight]
    served = outcomes.count(200)
    # Frames the server had taken in finish with 200; later ones are refused at the door, never a 5xx.
    assert set(outcomes) <= {200, "refused"}, outcomes
    assert served >= accepted_at_signal >= 8
    assert int(redis.hget(f"session:{session_id}", "frame_count")) == served
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
