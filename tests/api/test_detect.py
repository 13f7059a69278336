"""POST /detect/{session_id}: every accepted input form, and every documented error, through HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from app.services.inference.types import Priority
from app.settings import Settings
from tests.conftest import RunningApp, both_redis_backends
from tests.support.images import encode, png_bomb, scene_with_hazards

pytestmark = both_redis_backends
SCENE, FRAME = scene_with_hazards(seed=5, size=(1280, 720))
ERROR_FIELDS = {"code", "message", "details", "request_id"}
MEASURING_PAIRS = 10  # bound on the pairs of frames sent until the pool has measured its service time

StartApp = Callable[..., Awaitable[RunningApp]]
MakeSettings = Callable[..., Settings]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


async def test_multipart_frame_is_answered_with_the_documented_shape(api: RunningApp) -> None:
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", files={"file": ("frame.jpg", FRAME, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "session_id", "detections", "image", "model", "session", "timings_ms"}
    assert body["session_id"] == session_id and body["request_id"] == response.headers["x-request-id"]
    assert body["image"] == {"width": 1280, "height": 720}
    assert body["model"]["name"] == "best0408_openvino_model" and body["model"]["version"]
    assert body["session"] == {"verified": True, "degraded": False, "frame_count": 1}
    assert set(body["timings_ms"]) == {"decode", "preprocess", "queue_wait", "infer", "postprocess"}
    labels = {d["label"] for d in body["detections"]}
    assert {h.label for h in SCENE.hazards} & labels, "the scene's hazards should be found"
    for detection in body["detections"]:
        assert set(detection) == {"label", "class_id", "confidence", "box", "hazard_id", "new_hazard"}
        assert detection["hazard_id"] and detection["new_hazard"] is False  # one frame does not confirm a hazard
        box = detection["box"]
        assert 0 <= box["x1"] < box["x2"] <= 1280 and 0 <= box["y1"] < box["y2"] <= 720


async def test_server_timing_header_carries_the_stage_timings_of_the_answer(api: RunningApp) -> None:
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    metrics = [entry.strip().split(";dur=") for entry in response.headers["server-timing"].split(",")]
    assert {name: float(duration) for name, duration in metrics} == response.json()["timings_ms"]
    failed = await api.client.post(f"/detect/{session_id}", content=b"junk", headers={"content-type": "image/jpeg"})
    assert failed.status_code == 400 and "server-timing" not in failed.headers  # timings only for a served frame


@pytest.mark.parametrize(("fmt", "media_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
async def test_raw_image_bodies_are_accepted(api: RunningApp, fmt: str, media_type: str) -> None:
    session_id = await api.new_session()
    body = encode(SCENE.image, fmt)
    response = await api.client.post(f"/detect/{session_id}", content=body, headers={"content-type": media_type})
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 1280, "height": 720}


async def test_query_parameters_shape_the_answer(api: RunningApp) -> None:
    session_id = await api.new_session()
    url = f"/detect/{session_id}"
    few = await api.client.post(
        url, params={"max_det": 1, "conf": 0.01}, content=FRAME, headers={"content-type": "image/jpeg"}
    )
    assert len(few.json()["detections"]) == 1
    none = await api.client.post(url, params={"conf": 1.0}, content=FRAME, headers={"content-type": "image/jpeg"})
    assert none.json()["detections"] == []


@pytest.mark.parametrize("params", [{"conf": 1.5}, {"conf": "high"}, {"iou": -0.1}, {"max_det": 0}, {"max_det": 5000}])
async def test_out_of_range_query_parameters_are_422(api: RunningApp, params: dict[str, float | str]) -> None:
    session_id = await api.new_session()
    response = await api.client.post(
        f"/detect/{session_id}", params=params, content=FRAME, headers={"content-type": "image/jpeg"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["location"][0] == "query"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not an image at all", 400, "INVALID_IMAGE"),
        (b"", 400, "INVALID_IMAGE"),
        (FRAME[: len(FRAME) // 3], 400, "INVALID_IMAGE"),
        (encode(Image.new("RGB", (32, 32)), "GIF"), 400, "INVALID_IMAGE"),
        (png_bomb(60_000, 60_000), 413, "IMAGE_TOO_LARGE"),
    ],
    ids=["garbage", "empty", "truncated", "gif-as-jpeg", "decompression-bomb"],
)
async def test_bad_images_get_their_error_code(api: RunningApp, body: bytes, status: int, code: str) -> None:
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=body, headers={"content-type": "image/jpeg"})
    assert_error(response, status, code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/gif", ""])
async def test_unsupported_content_types_are_415(api: RunningApp, content_type: str) -> None:
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": content_type})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_multipart_without_a_file_field_is_422(api: RunningApp) -> None:
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", files={"image": ("f.jpg", FRAME, "image/jpeg")})
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_oversized_body_is_413_from_content_length(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(max_image_bytes=4096))
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(response, 413, "IMAGE_TOO_LARGE")


async def test_oversized_chunked_body_is_413_while_streaming(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(max_image_bytes=4096))
    session_id = await api.new_session()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(FRAME), 1024):
            yield FRAME[start : start + 1024]

    response = await api.client.post(f"/detect/{session_id}", content=chunks(), headers={"content-type": "image/jpeg"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "IMAGE_TOO_LARGE")


async def test_unknown_session_is_404_and_ended_session_is_409(api: RunningApp) -> None:
    unknown = await api.client.post("/detect/no-such-session", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(unknown, 404, "SESSION_NOT_FOUND")
    session_id = await api.new_session()
    await api.client.post(f"/sessions/{session_id}/end")
    ended = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(ended, 409, "SESSION_ENDED")


async def test_full_queue_is_503_overloaded_with_retry_after(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(max_request_queue_size=1, model_max_concurrent=1))
    session_id = await api.new_session()
    responses = await asyncio.gather(
        *(
            api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
            for _ in range(12)
        )
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    for response in (r for r in responses if r.status_code == 503):
        assert_error(response, 503, "OVERLOADED")
        assert int(response.headers["retry-after"]) >= 1


async def test_a_busy_engine_refuses_before_the_session_is_touched(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    # Under overload a refusal must cost next to nothing: no Redis round trip, no body read. So a frame for a session
    # that does not exist is refused as OVERLOADED, not answered 404 after a round trip to Redis.
    api = await start_app(make_settings(max_request_queue_size=1, model_max_concurrent=1))
    engine = api.app.state.parts.models.registry.active_engine
    with engine.pool.admission(Priority.INTERACTIVE, None):  # the one place in the engine is taken
        busy = await api.client.post("/detect/no-such-session", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(busy, 503, "OVERLOADED")
    assert int(busy.headers["retry-after"]) >= 1
    assert engine.stats().rejected == 1 and engine.stats().queued == 0
    free = await api.client.post("/detect/no-such-session", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(free, 404, "SESSION_NOT_FOUND")


@pytest.mark.serial  # the pool's measured service time is its premise: another test's CPU beside it skews it
async def test_a_frame_expected_past_the_latency_budget_is_503_at_once(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    # No inference fits in 1 us: once the pool has measured its service time, a frame that finds another inside is
    # refused. One that finds the engine idle is served: nobody waits, so refusing it would help no one.
    api = await start_app(make_settings(live_latency_budget_seconds=0.000001))
    session_id = await api.new_session()

    async def post() -> httpx.Response:
        return await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})

    alone = [(await post()).status_code for _ in range(3)]
    assert alone == [200, 200, 200]
    # A lone frame runs on the solo compile, which is no measure of a busy pool's rate: pairs (never refused, two
    # fit the pool) until frames on the streams have measured it. Without it a burst may all be admitted unmeasured.
    pool = api.app.state.parts.models.registry.active_engine.pool
    for _ in range(MEASURING_PAIRS):
        assert [r.status_code for r in await asyncio.gather(post(), post())] == [200, 200]
        if pool.service_rate is not None:
            break
    assert pool.service_rate is not None, "frames on the streams measured the pool"
    responses = await asyncio.gather(*(post() for _ in range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    for response in (r for r in responses if r.status_code == 503):
        assert_error(response, 503, "OVERLOADED")
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["details"]["deadline_in_ms"] == 0.0  # the budget, not the 1 s deadline


async def test_deadline_passed_is_504(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(request_timeout_seconds=0.0001))
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert_error(response, 504, "DEADLINE_EXCEEDED")


async def test_request_id_is_propagated_or_assigned(api: RunningApp) -> None:
    given = await api.client.get("/health/live", headers={"x-request-id": "field-app-42"})
    assert given.headers["x-request-id"] == "field-app-42"
    assigned = await api.client.get("/health/live")
    assert len(assigned.headers["x-request-id"]) == 32
    hostile = await api.client.get("/health/live", headers={"x-request-id": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


async def test_unknown_routes_and_methods_use_the_error_shape(api: RunningApp) -> None:
    assert_error(await api.client.get("/nope"), 404, "NOT_FOUND")
    assert_error(await api.client.get("/detect/abc"), 405, "METHOD_NOT_ALLOWED")
    assert_error(
        await api.client.post("/sessions", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "VALIDATION_ERROR",
    )


async def test_unexpected_exception_is_a_bare_500_in_the_error_shape(api: RunningApp) -> None:
    async def explode() -> None:
        raise RuntimeError("secret internals")

    api.app.add_api_route("/explode", explode)
    response = await api.client.get("/explode")
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret internals" not in response.text and error["details"] == {}


async def test_oversized_json_body_is_413_payload_too_large(api: RunningApp) -> None:
    metadata = {"notes": "x" * 70_000}
    response = await api.client.post("/sessions", json={"metadata": metadata})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_openapi_schema_documents_every_route(api: RunningApp) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    assert {
        "/sessions",
        "/sessions/{session_id}",
        "/sessions/{session_id}/end",
        "/sessions/{session_id}/detections",
    } <= set(schema["paths"])
    detect = schema["paths"]["/detect/{session_id}"]["post"]
    metadata = {"lat", "lon", "heading", "speed_mps", "captured_at"}
    assert {p["name"] for p in detect["parameters"]} == {"session_id", "conf", "iou", "max_det", "model", *metadata}
