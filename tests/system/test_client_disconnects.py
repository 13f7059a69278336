"""A client hanging up mid-frame (a real server process): logged and counted as 499, never as a server error."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis_process import RedisProcess
from tests.support.server import Server


@pytest.fixture
def server(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Server]:
    running = Server(redis_server.url, tmp_path)
    running.wait_ready()
    yield running
    running.stop()


def wait_for_log(server: Server, matches: Any, within: float = 15.0) -> dict[str, Any]:
    """The first JSON log line `matches` accepts, polled (bounded) as the server writes it."""
    deadline = time.monotonic() + within
    while True:
        found = [line for line in server.log_lines() if matches(line)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no such log line within {within} s:\n{server.log_path.read_text()}"
        time.sleep(0.05)


def test_a_client_that_hangs_up_mid_frame_is_a_499_not_a_server_error(server: Server) -> None:
    session_id = httpx.post(f"{server.base_url}/sessions").json()["session_id"]
    path = f"/detect/{session_id}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: 100000\r\nX-Request-ID: hung-up-1\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\xff" * 1000)
    line = wait_for_log(server, lambda line: line.get("event") == "request" and line.get("path") == path)
    assert line["status"] == 499, line
    assert line["reason"] == "client_disconnected" and line["request_id"] == "hung-up-1", line
    events = [line["event"] for line in server.log_lines()]
    assert "unhandled_exception" not in events
    assert not [entry for entry in server.log_lines() if "exception" in entry or "Traceback" in json.dumps(entry)]
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    counted = [row for row in metrics.splitlines() if row.startswith("hazard_http_request_duration_seconds_count")]
    assert any('route="/detect/{session_id}"' in row and 'status="499"' in row for row in counted), counted
    assert not any('route="/detect/{session_id}"' in row and 'status="500"' in row for row in counted), counted
    # The server is none the worse: the next frame of the session is served as usual.
    assert httpx.get(f"{server.base_url}/sessions/{session_id}", timeout=10).status_code == 200
