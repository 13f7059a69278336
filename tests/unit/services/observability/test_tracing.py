"""Tracing's set-up from the standard OTEL_* variables, and the helpers' behaviour with tracing off and on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.services.observability import tracing
from app.services.observability.logging import add_trace_ids

OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME")


@pytest.fixture(autouse=True)
def untraced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tracing.use_tracer_provider(None)
    yield
    provider = tracing.current_provider()
    tracing.use_tracer_provider(None)
    if provider is not None:
        provider.shutdown()


@pytest.fixture
def exported() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    return exporter


def test_without_an_otlp_endpoint_nothing_is_traced() -> None:
    assert tracing.configure_tracing("hazard-api") is None
    assert not tracing.tracing_on()
    assert tracing.traceparent() == {}


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_an_otlp_endpoint_turns_tracing_on_named_for_the_process(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    provider = tracing.configure_tracing("hazard-worker")
    assert provider is not None and tracing.tracing_on()
    assert provider.resource.attributes[SERVICE_NAME] == "hazard-worker"


def test_otel_service_name_wins_over_the_process_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-api-eu")
    provider = tracing.configure_tracing("hazard-api")
    assert provider is not None and provider.resource.attributes[SERVICE_NAME] == "edge-api-eu"


def test_otel_sdk_disabled_keeps_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure_tracing("hazard-api") is None


def test_stage_spans_open_only_inside_a_trace(exported: InMemorySpanExporter) -> None:
    with tracing.stage_span("admission"):
        pass
    assert exported.get_finished_spans() == ()  # no frame's trace under way: nothing to hang it on
    tracer = trace.get_tracer("test", tracer_provider=tracing.current_provider())
    with tracer.start_as_current_span("frame"), tracing.stage_span("admission"):
        pass
    assert [s.name for s in exported.get_finished_spans()] == ["admission", "frame"]


def test_measured_stages_are_laid_back_to_back_ending_when_told(exported: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test", tracer_provider=tracing.current_provider())
    with tracer.start_as_current_span("frame"):
        tracing.record_stage_spans([("decode", 2.0, {"decode": 2.0}), ("inference", 5.0, {"infer": 5.0})], 10**18)
    decode, inference, _ = exported.get_finished_spans()
    assert (decode.start_time, decode.end_time) == (10**18 - 7_000_000, 10**18 - 5_000_000)
    assert (inference.start_time, inference.end_time) == (10**18 - 5_000_000, 10**18)
    assert inference.attributes == {"infer_ms": 5.0}


def test_a_consumer_span_continues_the_trace_its_job_carried(exported: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("test", tracer_provider=tracing.current_provider())
    with tracer.start_as_current_span("request") as request:
        carrier = tracing.traceparent()
    assert set(carrier) == {"traceparent"}
    with tracing.consumer_span("batch_frame", carrier, job_id="j1"):
        pass
    consumer = exported.get_finished_spans()[-1]
    assert consumer.context is not None and consumer.parent is not None
    assert consumer.context.trace_id == request.get_span_context().trace_id
    assert consumer.parent.span_id == request.get_span_context().span_id


def test_log_lines_carry_the_trace_and_span_ids_only_inside_a_span(exported: InMemorySpanExporter) -> None:
    assert "trace_id" not in add_trace_ids(None, "info", {"event": "outside"})
    tracer = trace.get_tracer("test", tracer_provider=tracing.current_provider())
    with tracer.start_as_current_span("frame") as span:
        event = add_trace_ids(None, "info", {"event": "inside"})
    assert event["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert event["span_id"] == format(span.get_span_context().span_id, "016x")
