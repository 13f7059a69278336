"""The Python client (`hazard_client`) against a real server process (real Redis, real model, embedded worker):
typed answers that agree with the served OpenAPI document, errors as exceptions, retries of refusals that say
`Retry-After` (never of live frames unless asked), one pooled connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from hazard_client import ApiError, AsyncHazardClient, ConnectionFailed, Frame, HazardClient, RetryPolicy
from hazard_client.models import COMPONENTS, FrameMeta
from tests.support.images import encode, scene, scene_with_hazards
from tests.support.redis_process import RedisProcess, free_port
from tests.support.server import Server

PENDING_LIMIT = 256 * 1024  # small enough that a few dozen frames waiting push the next call past it
RATE_BURST = 3


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process = Server(
        redis_server.url,
        tmp_path_factory.mktemp("client-api"),
        JOB_PENDING_BYTES_LIMIT=str(PENDING_LIMIT),
        SESSION_RATE_LIMIT_BURST=str(RATE_BURST),
        SESSION_RATE_LIMIT_PER_SECOND="1",
        ADMIN_TOKEN="client-test-operator-token-0123456789",
        MODEL_WARMUP_REQUESTS="1",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(server: Server) -> Iterator[HazardClient]:
    with HazardClient(server.base_url, timeout=30) as client:
        yield client


def small_frames(count: int, first_seed: int = 0) -> list[bytes]:
    return [encode(scene(seed, (320, 180)).image, quality=85) for seed in range(first_seed, first_seed + count)]


# --- the typed answers are the served contract ---------------------------------------------------------------------


def shape(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """A property's type, written the same way for the server's components and the client's $defs."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        # An enum component (Phase, UploadStatus) is read as a plain string by the client.
        return "string" if "enum" in components.get(name, {}) else f"ref:{name}"
    if "anyOf" in schema:
        return "|".join(sorted(shape(option, components) for option in schema["anyOf"]))
    if "enum" in schema:
        return "enum:" + ",".join(sorted(map(str, schema["enum"])))
    kind = schema.get("type")
    if kind == "array":
        return f"array<{shape(schema.get('items', {}), components)}>"
    if kind == "object" and "properties" not in schema:
        values = schema.get("additionalProperties", True)
        return f"map<{'any' if values is True else shape(values, components)}>"
    if kind == "string" and schema.get("format") == "date-time":
        return "datetime"
    return str(kind)


def described(model: type[BaseModel]) -> tuple[dict[str, str], set[str]]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    return {name: shape(prop, defs) for name, prop in schema["properties"].items()}, set(schema.get("required", []))


def test_typed_answers_agree_with_the_served_openapi_document(server: Server) -> None:
    components = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()["components"]["schemas"]
    for name, model in COMPONENTS.items():
        assert name in components, f"the client reads {name}, which the API does not describe"
        served = components[name]
        expected = {prop: shape(schema, components) for prop, schema in served["properties"].items()}
        properties, required = described(model)
        assert properties == expected, f"{name}: client {properties} != served {expected}"
        assert required == set(served.get("required", [])), f"{name}: required fields differ"


# --- calls --------------------------------------------------------------------------------------------------------


def test_a_session_detects_frames_given_as_bytes_paths_or_pil_images(client: HazardClient, tmp_path: Path) -> None:
    hazard_scene, jpeg = scene_with_hazards(seed=3, size=(640, 360))
    path = tmp_path / "frame.jpg"
    path.write_bytes(jpeg)
    session = client.create_session({"vehicle": "van-7"})
    assert session.status == "created" and session.metadata == {"vehicle": "van-7"}

    by_bytes = client.detect(session.session_id, jpeg, lat=52.52, lon=13.405, captured_at="2026-01-01T10:00:00+00:00")
    by_path = client.detect(session.session_id, path, conf=0.5)
    by_image = client.detect(session.session_id, hazard_scene.image, max_det=1)
    assert by_bytes.detections and by_bytes.image.width == 640
    assert all(d.confidence >= 0.5 for d in by_path.detections)
    assert len(by_image.detections) == 1
    assert by_bytes.session.verified and by_image.session.frame_count == 3

    history = client.history(session.session_id, limit=2)
    assert history.total == 3 and [item.request_id for item in history.items] == [
        by_image.request_id,
        by_path.request_id,
    ]
    assert client.end_session(session.session_id).status == "ended"


async def test_the_async_client_runs_a_job_to_typed_results(server: Server) -> None:
    good = small_frames(3, first_seed=100)
    async with AsyncHazardClient(server.base_url) as client:
        job = await client.submit_job("async", conf=0.3, frames=[Frame(good[0], "a.jpg", FrameMeta(lat=1.0, lon=2.0))])
        assert job.total == 1 and job.options.conf == 0.3 and job.frame_ids == ["f000000"]
        accepted = await client.add_frames(
            job.job_id, [good[1], Frame(good[2], "c.jpg"), Frame(b"not a jpeg", "x.jpg")]
        )
        assert accepted.accepted == 3
        await client.close_job(job.job_id)
        finished = await client.wait_job(job.job_id)
        results = [item async for item in client.iter_results(job.job_id, page_size=2)]
    assert finished.status == "completed" and (finished.done, finished.failed) == (3, 1)
    assert [item.meta.filename for item in results] == ["a.jpg", "frame", "c.jpg", "x.jpg"]
    assert results[0].meta.lat == 1.0 and results[0].model is not None
    assert [item.status for item in results] == ["done", "done", "done", "failed"]
    assert results[3].error is not None and results[3].error.code == "INVALID_IMAGE"
    # The jobs contract: boxes and distinct hazards apart (three different frames confirm no hazard).
    assert finished.detections == sum(len(item.detections) for item in results) and finished.hazards == 0
    assert all(d.hazard_id for item in results for d in item.detections)


def test_errors_are_exceptions_with_code_message_and_request_id(client: HazardClient) -> None:
    with pytest.raises(ApiError) as raised:
        client.job_status("no-such-job")
    error = raised.value
    assert (error.status, error.code) == (404, "JOB_NOT_FOUND")
    assert error.message and error.request_id and len(error.request_id) == 32
    with pytest.raises(ApiError) as unauthorized:
        client.models()  # no admin token
    assert unauthorized.value.code == "UNAUTHORIZED" and not unauthorized.value.unavailable


def test_an_unreachable_server_is_one_connection_error_at_once() -> None:
    started = time.monotonic()
    with HazardClient(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ConnectionFailed) as raised:
        client.live()
    assert time.monotonic() - started < 5
    assert "cannot connect" in str(raised.value) and raised.value.request_id


def test_live_frames_are_not_retried_unless_asked(client: HazardClient) -> None:
    session = client.create_session()
    frame = small_frames(1)[0]
    for _ in range(RATE_BURST):
        client.detect(session.session_id, frame)
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        client.detect(session.session_id, frame)  # the bucket is empty: 429 with Retry-After, not waited out
    assert raised.value.code == "RATE_LIMITED" and raised.value.retry_after is not None
    assert time.monotonic() - started < 1

    waits: list[float] = []
    patient = RetryPolicy(attempts=5, max_wait=10, on_retry=lambda error, delay: waits.append(delay))
    answer = client.detect(session.session_id, frame, retry=patient)
    assert answer.session.frame_count is not None and waits and all(wait >= 1 for wait in waits)


def test_backpressure_is_waited_out_with_capped_backoff(client: HazardClient) -> None:
    job = client.submit_job("backpressure")
    backlog = small_frames(40, first_seed=200)  # well past PENDING_LIMIT: taken at once, since nothing waits
    assert sum(map(len, backlog)) > PENDING_LIMIT
    client.add_frames(job.job_id, backlog)
    with pytest.raises(ApiError) as refused:
        client.add_frames(job.job_id, small_frames(1, first_seed=300), retry=RetryPolicy.never())
    assert refused.value.code == "BACKPRESSURE" and refused.value.retry_after is not None

    waits: list[float] = []
    policy = RetryPolicy(attempts=20, max_delay=2, max_wait=60, on_retry=lambda error, delay: waits.append(delay))
    accepted = client.add_frames(job.job_id, small_frames(1, first_seed=300), retry=policy)
    assert accepted.accepted == 1 and waits  # it waited for the workers, then went through
    assert all(1 <= wait <= 2 * (1 + policy.jitter) for wait in waits)  # never below Retry-After, capped
    client.cancel_job(job.job_id)


def test_requests_share_one_pooled_connection(client: HazardClient) -> None:
    addresses: set[Any] = set()
    client.http.event_hooks["response"].append(
        lambda response: addresses.add(response.extensions["network_stream"].get_extra_info("client_addr"))
    )
    for _ in range(5):
        client.live()
        client.list_jobs(limit=1)
    assert len(addresses) == 1


# --- the retry policy alone ---------------------------------------------------------------------------------------


def refusal(status: int, retry_after: float | None) -> ApiError:
    return ApiError(status, "OVERLOADED", "busy", retry_after=retry_after)


def test_retry_policy_backs_off_exponentially_capped_and_never_below_retry_after() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=4, max_wait=1000, jitter=0)
    assert [policy.delay(n, refusal(503, 0)) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(5, refusal(503, 0)) is None  # attempts spent
    assert policy.delay(0, refusal(429, 3)) == 3  # the server's Retry-After wins over a shorter backoff
    assert RetryPolicy(max_wait=5, jitter=0).delay(0, refusal(503, 2), waited=4) is None  # past max_wait
    assert policy.delay(0, refusal(503, None)) is None  # no Retry-After: not a refusal that says "come back"
    assert policy.delay(0, refusal(500, 1)) is None
