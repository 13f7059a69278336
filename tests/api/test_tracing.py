"""Traces through the app, read from the SDK's in-memory exporter: the span tree of a /detect frame, of a batch job's
frame (API -> queue -> worker) and of a remote-mode frame (API -> queue -> a worker process's consumer), and the
trace id in the log lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.services.observability.tracing import use_tracer_provider
from app.settings import Settings
from app.wiring.lifecycle import Lifecycle
from app.wiring.parts import build_parts
from tests.conftest import RunningApp
from tests.support.images import encode, scene, scene_with_hazards
from tests.support.waiting import wait_for

StartApp = Callable[..., Any]
_, HAZARD_FRAME = scene_with_hazards(seed=13, size=(640, 360))
FRAME_STAGES = {"admission", "decode", "inference", "tracking", "upload", "record"}


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """This process traced into memory for the test (a provider in use is what the app instruments itself with)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    yield exporter
    use_tracer_provider(None)
    provider.shutdown()


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    assert parent.context is not None
    return {s.name: s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id}


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def post_frame(api: RunningApp, session_id: str) -> httpx.Response:
    return await api.client.post(f"/detect/{session_id}", content=HAZARD_FRAME, headers={"content-type": "image/jpeg"})


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


async def test_a_detect_frame_is_one_server_span_with_a_child_per_stage(
    start_app: StartApp, make_settings: Callable[..., Settings], exported: InMemorySpanExporter
) -> None:
    api = await start_app(make_settings())
    session_id = await api.new_session()
    exported.clear()
    response = await api.client.post(
        f"/detect/{session_id}", content=HAZARD_FRAME, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    spans = exported.get_finished_spans()
    server = only(spans, "POST /detect/{session_id}")
    assert server.kind is SpanKind.SERVER and server.parent is None
    stages = children(spans, server)
    assert set(stages) >= FRAME_STAGES, sorted(stages)
    assert all(trace_id(s) == trace_id(server) for s in spans)
    # The engine's stages are laid out from its measured timings, back to back, inside the request.
    decode, inference = stages["decode"], stages["inference"]
    assert server.start_time is not None and server.end_time is not None
    assert decode.start_time is not None and decode.end_time is not None and inference.end_time is not None
    assert server.start_time <= decode.start_time <= decode.end_time <= inference.end_time <= server.end_time
    assert inference.attributes is not None and float(str(inference.attributes["infer_ms"])) > 0
    # Redis commands nest in the stage that sent them.
    redis_in_admission = children(spans, stages["admission"]).values()
    assert any(s.kind is SpanKind.CLIENT and s.attributes and s.attributes["db.system"] for s in redis_in_admission)


async def test_probes_and_scrapes_open_no_trace(
    start_app: StartApp, make_settings: Callable[..., Settings], exported: InMemorySpanExporter
) -> None:
    traced = await start_app(make_settings())
    exported.clear()
    for path in ("/metrics", "/health/live", "/health/ready"):
        assert (await traced.client.get(path)).status_code == 200
    assert exported.get_finished_spans() == ()


async def test_a_log_line_carries_the_trace_id_beside_the_request_id(
    start_app: StartApp,
    make_settings: Callable[..., Settings],
    exported: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = await start_app(make_settings(log_level="INFO"))
    session_id = await api.new_session()
    exported.clear()
    capsys.readouterr()
    response = await api.client.post(
        f"/detect/{session_id}", content=HAZARD_FRAME, headers={"content-type": "image/jpeg", "x-request-id": "r-42"}
    )
    assert response.status_code == 200
    server = only(exported.get_finished_spans(), "POST /detect/{session_id}")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (request_line,) = [line for line in lines if line["event"] == "request" and line.get("request_id") == "r-42"]
    assert request_line["trace_id"] == format(trace_id(server), "032x")
    assert len(request_line["span_id"]) == 16


async def test_a_batch_frame_continues_the_trace_of_the_request_that_queued_it(
    start_app: StartApp, make_settings: Callable[..., Settings], exported: InMemorySpanExporter
) -> None:
    api = await start_app(make_settings(embedded_worker=True))
    job_id = (await api.client.post("/jobs", json={"name": "traced"})).json()["job_id"]
    exported.clear()
    frames = [("file", ("0.jpg", encode(scene(3).image, quality=85), "image/jpeg"))]
    assert (await api.client.post(f"/jobs/{job_id}/frames", files=frames)).status_code == 202

    async def worked() -> bool:
        return any(s.name == "batch_frame" for s in exported.get_finished_spans())

    await wait_for(worked, "the batch frame's span", 30)
    spans = exported.get_finished_spans()
    request, worker = only(spans, "POST /jobs/{job_id}/frames"), only(spans, "batch_frame")
    assert worker.kind is SpanKind.CONSUMER
    assert trace_id(worker) == trace_id(request)
    assert worker.parent is not None and worker.parent.is_remote  # continued from the job's traceparent
    assert worker.attributes is not None and worker.attributes["job_id"] == job_id
    assert {"decode", "inference"} <= set(children(spans, worker))


async def test_a_remote_mode_frame_is_one_trace_from_the_api_through_the_queue_to_the_worker(
    start_app: StartApp, make_settings: Callable[..., Settings], exported: InMemorySpanExporter
) -> None:
    settings = make_settings(inference_mode="remote")
    worker = Lifecycle(build_parts(make_settings(fleet_name=settings.fleet.name), role="worker"))
    await worker.start()
    try:
        api = await start_app(settings)
        session_id = await api.new_session()
        exported.clear()
        response = await post_frame(api, session_id)
        assert response.status_code == 200, response.text
    finally:
        await worker.stop()
    spans = exported.get_finished_spans()
    server = only(spans, "POST /detect/{session_id}")
    stages = children(spans, server)
    assert {"admission", "queue", "tracking", "upload", "record"} <= set(stages), sorted(stages)
    assert not {"decode", "inference"} & set(stages)  # they ran on the worker
    consumer = children(spans, stages["queue"])["live_frame"]
    assert consumer.kind is SpanKind.CONSUMER and trace_id(consumer) == trace_id(server)
    assert {"decode", "inference"} <= set(children(spans, consumer))
