"""/metrics after real traffic: the numbers move the way the traffic says they should."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from tests.conftest import RunningApp
from tests.support.images import scene_with_hazards

SCENE, FRAME = scene_with_hazards(seed=17, size=(1280, 720))

# (sample name, sorted labels) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(api: RunningApp) -> Samples:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


MODEL = "best0408_openvino_model"  # every detection metric says which version produced it


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_real_traffic(api: RunningApp) -> None:
    before = await scrape(api)
    session_id = await api.new_session()
    detections = []
    for _ in range(3):
        response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
        detections += response.json()["detections"]
    unknown = "u" * 32  # shaped like a session id, so Redis is asked (a malformed id is refused before that)
    await api.client.post(f"/detect/{unknown}", content=FRAME, headers={"content-type": "image/jpeg"})
    after = await scrape(api)

    route = {"route": "/detect/{session_id}", "method": "POST"}
    assert (
        value(after, "hazard_http_request_duration_seconds_count", **route, status="200")
        - value(before, "hazard_http_request_duration_seconds_count", **route, status="200")
        == 3
    )
    assert value(after, "hazard_http_request_duration_seconds_count", **route, status="404") >= 1
    for stage in ("decode", "preprocess", "queue_wait", "infer", "postprocess"):
        assert (
            value(after, "hazard_detect_stage_duration_seconds_count", stage=stage, model=MODEL)
            - value(before, "hazard_detect_stage_duration_seconds_count", stage=stage, model=MODEL)
            == 3
        )
    assert value(after, "hazard_detect_stage_duration_seconds_sum", stage="infer", model=MODEL) > 0
    for label in {d["label"] for d in detections}:
        moved = value(after, "hazard_detections_total", label=label, model=MODEL) - value(
            before, "hazard_detections_total", label=label, model=MODEL
        )
        assert moved == sum(d["label"] == label for d in detections)
    assert (
        value(after, "hazard_frames_total", mode="verified", model=MODEL)
        - value(before, "hazard_frames_total", mode="verified", model=MODEL)
        == 3
    )
    redis_admits = {"operation": "admit_frame", "outcome": "ok"}
    assert (
        value(after, "hazard_redis_command_duration_seconds_count", **redis_admits)
        - value(before, "hazard_redis_command_duration_seconds_count", **redis_admits)
        == 4
    )  # three frames and the unknown session: each one round trip
    assert value(after, "hazard_inference_completed_total") - value(before, "hazard_inference_completed_total") == 3
    # An API compiles ADAPTIVE: the inferences that ran alone on every core are counted too, at least the first
    # warm-up inference (alone in a fresh engine).
    assert 1 <= value(after, "hazard_inference_solo_total") <= value(after, "hazard_inference_completed_total")
    assert value(after, "hazard_inference_queue_depth") == 0 and value(after, "hazard_inference_in_flight") == 0
    assert value(after, "hazard_active_sessions") >= 1
    assert value(after, "hazard_breaker_state", dependency="redis") == 0
    assert value(after, "hazard_model_ready") == 1
    info = [key for key in after if key[0] == "hazard_model_info"]
    assert info and dict(info[0][1])["name"] == "best0408_openvino_model"


async def test_latency_histogram_buckets_bracket_the_150ms_target(api: RunningApp) -> None:
    text = (await api.client.get("/metrics")).text
    buckets = set(re.findall(r'hazard_http_request_duration_seconds_bucket\{[^}]*le="([^"]+)"', text))
    assert {"0.1", "0.125", "0.15", "0.2"} <= buckets


async def test_active_sessions_gauge_is_counted_at_most_once_per_refresh_interval(
    start_app: Callable[..., Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(make_settings(active_sessions_refresh_seconds=60))
    counted = value(await scrape(api), "hazard_active_sessions")
    await api.new_session()
    assert value(await scrape(api), "hazard_active_sessions") == counted  # the last count, no new scan
    text = (await api.client.get("/metrics")).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "hazard_active_sessions")
    assert "max()" in family.documentation  # every replica exports the same Redis-wide number


async def test_the_process_its_model_loads_and_swaps_are_exported(api: RunningApp) -> None:
    samples = await scrape(api)
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_open_fds") > 0
    assert value(samples, "hazard_model_swaps_total", model=MODEL) == 1  # the activation at start
    for phase in ("compile", "warm", "probe"):
        assert value(samples, "hazard_model_load_seconds_count", model=MODEL, phase=phase) == 1, phase


async def test_new_hazards_are_counted_once_when_a_session_confirms_them(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> None:
    api = await start_app(make_settings(track_min_hits=2))
    session_id = await api.new_session()
    answers = []
    for _ in range(3):
        response = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
        answers.append(response.json())
    confirmed = [d["label"] for answer in answers for d in answer["detections"] if d["new_hazard"]]
    assert confirmed, "the scene's hazards were not confirmed: nothing to count"
    samples = await scrape(api)
    for label in set(confirmed):
        assert value(samples, "hazard_new_hazards_total", label=label) == confirmed.count(label)
