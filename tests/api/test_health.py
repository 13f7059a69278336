"""Probe semantics in each state: starting, ready, Redis down, model broken, shutting down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from app.settings import Settings
from app.wiring.lifecycle import Lifecycle
from app.wiring.parts import Parts
from tests.conftest import RunningApp, wait_until_ready
from tests.support.images import scene_with_hazards
from tests.support.redis_process import free_port
from tests.support.waiting import wait_for

_, FRAME = scene_with_hazards(seed=7, size=(640, 360))

StartApp = Callable[..., Awaitable[RunningApp]]
MakeSettings = Callable[..., Settings]


async def test_ready_app_answers_every_probe(api: RunningApp) -> None:
    assert (await api.client.get("/health/live")).json() == {"status": "alive"}
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["phase"] == "ready" and ready.json()["reasons"] == []
    deep = await api.client.get("/health/deep")
    assert deep.status_code == 200, deep.text
    checks = deep.json()["checks"]
    assert checks["inference"]["ok"] and set(checks["inference"]["expected_labels"]) <= set(
        checks["inference"]["found_labels"]
    )
    assert checks["redis"]["ok"] and checks["redis"]["latency_ms"] >= 0
    assert checks["storage"]["ok"]


async def test_the_precision_the_model_runs_in_is_reported(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(model_inference_precision="f32"))
    ready = await api.client.get("/health/ready")
    assert ready.json()["checks"]["model"]["precision"] == "f32"
    metrics = (await api.client.get("/metrics")).text
    assert re.search(r'hazard_model_info\{[^}]*precision="f32"', metrics), metrics


async def test_starting_app_is_live_but_not_ready(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(model_warmup_requests=200), wait_ready=False)
    assert (await api.client.get("/health/live")).status_code == 200
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["phase"] == "starting"
    session_id = await api.new_session()
    response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "MODEL_NOT_READY"
    assert response.headers["retry-after"] == "1", "a client retries a process that is warming up"
    await wait_until_ready(api.client)
    assert (await api.client.get("/health/ready")).status_code == 200


async def test_broken_model_keeps_liveness_and_explains_readiness(
    start_app: StartApp, make_settings: MakeSettings, tmp_path: Path
) -> None:
    missing = tmp_path / "nothing_here_openvino_model"
    api = await start_app(make_settings(model_dir=missing))
    assert (await api.client.get("/health/live")).status_code == 200
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["phase"] == "model_failed"
    assert str(missing) in ready.json()["reasons"][0]
    assert (await api.client.get("/health/deep")).status_code == 503


async def test_redis_down_is_degraded_but_ready_when_fail_open(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    api = await start_app(make_settings(redis_url=dead_redis))
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["degraded"] is True
    assert ready.json()["checks"]["redis"]["ok"] is False
    deep = await api.client.get("/health/deep")
    assert deep.status_code == 503 and deep.json()["checks"]["redis"]["ok"] is False


async def test_shutting_down_app_is_not_ready_and_drains_in_flight_frames(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    api = await start_app(make_settings(model_max_concurrent=1, request_timeout_seconds=30))
    parts: Parts = api.app.state.parts
    lifecycle: Lifecycle = api.app.state.lifecycle
    session_id = await api.new_session()
    in_flight = [
        asyncio.create_task(
            api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
        )
        for _ in range(8)
    ]

    async def all_accepted() -> bool:  # running, or already answered: none can be refused by the stop any more
        return parts.detection.in_flight + sum(task.done() for task in in_flight) == 8

    # Polled every millisecond: the stop comes while most of them still wait for the one infer request.
    await wait_for(all_accepted, "all eight frames accepted", every=0.001)
    stopping = asyncio.create_task(lifecycle.stop())
    await asyncio.sleep(0)
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 503 and "shutting down" in ready.json()["reasons"]
    responses = await asyncio.gather(*in_flight)
    await stopping
    assert [r.status_code for r in responses] == [200] * 8


async def test_a_burst_of_deep_probes_runs_one_inference(api: RunningApp) -> None:
    parts = api.app.state.parts
    completed = parts.models.registry.active_engine.stats().completed
    answers = await asyncio.gather(*(api.client.get("/health/deep") for _ in range(30)))
    assert {answer.status_code for answer in answers} == {200}
    assert parts.health.deep_runs == 1
    assert parts.models.registry.active_engine.stats().completed == completed + 1
    cache_seconds = parts.settings.telemetry.health_deep_cache_seconds
    assert max(answer.json()["age_seconds"] for answer in answers) < cache_seconds
