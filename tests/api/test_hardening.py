"""Findings of the security review: session metadata that could be stored but never answered, and clients that
hang up mid-frame being logged and counted as server errors."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.services.sessions.keys import SESSION_MATCH
from tests.conftest import DirectRedis, RunningApp
from tests.support.redis_process import RedisProcess
from tests.support.server import Server


def nested(levels: int) -> dict[str, Any]:
    """{"a": {"a": ... {}}}: `levels` objects deep, the outermost included."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def session_keys(direct_redis: DirectRedis) -> set[str]:
    return {str(key) for key in direct_redis.client.scan_iter(match=SESSION_MATCH)}


async def post_raw_session(api: RunningApp, body: str) -> httpx.Response:
    """A body as the client wrote it (JSON escapes such as a lone `\\ud800` survive only this way)."""
    return await api.client.post("/sessions", content=body.encode(), headers={"content-type": "application/json"})


def assert_refused(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["limit"] == limit, error
    assert error["request_id"] == response.headers["x-request-id"]


async def test_deeply_nested_metadata_is_refused_before_anything_is_stored(
    api: RunningApp, direct_redis: DirectRedis
) -> None:
    before = session_keys(direct_redis)
    response = await post_raw_session(api, json.dumps({"metadata": nested(300)}))
    assert_refused(response, "SESSION_METADATA_MAX_DEPTH")
    assert "SESSION_METADATA_MAX_DEPTH (8)" in response.json()["error"]["message"]
    assert session_keys(direct_redis) == before  # the route wrote nothing
    # The deepest metadata the limit allows is stored and answered as sent.
    created = await api.client.post("/sessions", json={"metadata": nested(8)})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == nested(8)
    lists: Any = [[]]  # arrays are levels too: 7 objects, then 2 arrays
    for _ in range(7):
        lists = {"a": lists}
    deeper_by_a_list = await api.client.post("/sessions", json={"metadata": lists})
    assert_refused(deeper_by_a_list, "SESSION_METADATA_MAX_DEPTH")


@pytest.mark.parametrize(
    "body",
    [
        '{"metadata": {"x": "\\ud800"}}',  # a lone high surrogate as a value
        '{"metadata": {"x": ["ok", "\\udfff"]}}',  # a lone low surrogate in a list
        '{"metadata": {"\\ud800": 1}}',  # ... as a key
    ],
)
async def test_metadata_strings_must_be_unicode(api: RunningApp, direct_redis: DirectRedis, body: str) -> None:
    before = session_keys(direct_redis)
    response = await post_raw_session(api, body)
    assert_refused(response, "unicode")
    assert session_keys(direct_redis) == before


async def test_metadata_over_the_size_or_key_limit_is_refused(api: RunningApp, direct_redis: DirectRedis) -> None:
    before = session_keys(direct_redis)
    too_large = await api.client.post("/sessions", json={"metadata": {"note": "x" * 5 * 1024}})
    assert_refused(too_large, "SESSION_METADATA_MAX_BYTES")
    assert too_large.json()["error"]["details"]["max"] == 4096
    too_many_keys = await api.client.post("/sessions", json={"metadata": {"a": {f"k{i}": i for i in range(64)}}})
    assert_refused(too_many_keys, "SESSION_METADATA_MAX_KEYS")  # 65 keys in all, the nested ones counted
    assert session_keys(direct_redis) == before


async def test_ordinary_metadata_is_still_stored_and_answered(api: RunningApp) -> None:
    metadata = {"vehicle": "van-7", "route": {"name": "Ringstraße ☂", "stops": [1, 2, {"depot": True}]}, "n": 1.5}
    created = await api.client.post("/sessions", json={"metadata": metadata, "ttl_seconds": 60})
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    read = await api.client.get(f"/sessions/{session_id}")
    assert read.status_code == 200 and read.json()["metadata"] == metadata


async def test_metadata_limits_come_from_settings(start_app: Any, make_settings: Any) -> None:
    api: RunningApp = await start_app(
        make_settings(session_metadata_max_bytes=64, session_metadata_max_depth=2, session_metadata_max_keys=3)
    )
    assert (await api.client.post("/sessions", json={"metadata": {"a": {"b": 1}, "c": 2}})).status_code == 201
    assert_refused(await api.client.post("/sessions", json={"metadata": nested(3)}), "SESSION_METADATA_MAX_DEPTH")
    four_keys = {"metadata": {"a": 1, "b": 2, "c": 3, "d": 4}}
    assert_refused(await api.client.post("/sessions", json=four_keys), "SESSION_METADATA_MAX_KEYS")
    assert_refused(await api.client.post("/sessions", json={"metadata": {"a": "x" * 64}}), "SESSION_METADATA_MAX_BYTES")


# A client hanging up mid-frame


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
