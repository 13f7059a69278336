"""Session metadata is bounded (depth, size, keys, from settings) and must be Unicode: what cannot be answered
is refused before anything is stored; ordinary metadata is stored and answered as sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.services.sessions.keys import SESSION_MATCH
from tests.conftest import DirectRedis, RunningApp


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
