"""Traces (OpenTelemetry): one trace per frame, from the API's server span through the job queue to a worker.

Off unless an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): then
nothing is instrumented at all and every helper here returns at its first line, so tracing off costs nothing
measurable (docs/PERFORMANCE.md "Tracing"). On, the SDK reads the standard OTEL_* variables itself (service name,
resource attributes, sampler, batch processor, exporter headers and timeout).

Services call the helpers below and never the SDK: a stage span around an awaited step (`stage_span`), spans laid
out after the fact from an engine's measured timings (`record_stage_spans`, nothing wraps the hot code), and the
W3C `traceparent` carried in a queued job (`traceparent`, `consumer_span`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer
from opentelemetry.util.types import Attributes

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACER_NAME = "hazard"
_NOT_TRACED: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class _Tracing:
    """The process's tracer provider; None: tracing off."""

    provider: TracerProvider | None = None
    tracer: Tracer | None = None


_tracing = _Tracing()


def tracing_on() -> bool:
    return _tracing.tracer is not None


def configure_tracing(default_service_name: str) -> TracerProvider | None:
    """From the environment, once per process (hazard-api, hazard-worker): an SDK provider exporting over OTLP/HTTP
    in batches when an endpoint is set, else None and nothing traced. A provider already in use (a test's) stays."""
    if _tracing.provider is not None:
        return _tracing.provider
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # only a tracing process

    provider = TracerProvider(resource=service_resource(default_service_name))  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_BSP_*, OTEL_EXPORTER_OTLP_*
    use_tracer_provider(provider)
    return provider


def service_resource(default_service_name: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES when set; else our process's name, not `unknown_service`."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace this process with `provider` (None: stop tracing). Redis commands are traced only inside a trace:
    the queue's polling and the background loops would otherwise open a root trace for every command."""
    instrumentor = RedisInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _tracing.provider = provider
    _tracing.tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
    if provider is not None:
        instrumentor.instrument(tracer_provider=_ChildSpansOnly(provider))


def current_provider() -> TracerProvider | None:
    return _tracing.provider


def stage_span(name: str, **attributes: str | int | float | bool) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one around an awaited step (its Redis commands nest in it); a shared no-op
    when tracing is off or nothing is being traced."""
    tracer = _tracing.tracer
    if tracer is None or not trace.get_current_span().is_recording():
        return _NOT_TRACED
    return tracer.start_as_current_span(name, attributes=attributes or None)


def record_stage_spans(stages: Sequence[tuple[str, float, Mapping[str, float]]], ended_ns: int) -> None:
    """Children of the current span, laid out back to back from measured durations: (name, milliseconds, attributes
    in milliseconds), the last ending at `ended_ns` (time.time_ns()). Cheaper than spans around the hot code, and
    the stages ran in a thread where the current span is not."""
    tracer = _tracing.tracer
    if tracer is None or not trace.get_current_span().is_recording():
        return
    start_ns = ended_ns - int(sum(milliseconds for _, milliseconds, _ in stages) * 1e6)
    for name, milliseconds, attributes in stages:
        end_ns = start_ns + int(milliseconds * 1e6)
        span = tracer.start_span(name, start_time=start_ns, attributes={f"{k}_ms": v for k, v in attributes.items()})
        span.end(end_time=end_ns)
        start_ns = end_ns


def traceparent() -> dict[str, str]:
    """The current span's W3C context (`traceparent`, `tracestate`) to travel with a queued job; {} untraced."""
    if _tracing.tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


@contextlib.contextmanager
def consumer_span(name: str, carrier: Mapping[str, Any] | None, **attributes: str | int) -> Iterator[None]:
    """A worker's span for one queued frame, continuing the trace its producer sent along (else a trace of its own)."""
    tracer = _tracing.tracer
    if tracer is None:
        yield
        return
    parent = extract({k: str(v) for k, v in (carrier or {}).items()})
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes or None):
        yield


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span, hex as trace backends show them; None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class _ChildSpansOnly(trace.TracerProvider):
    """Tracers that start a span only inside a trace being recorded (a sampled frame's), else return the invalid span:
    no sampler call, no ids, nothing to end."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Tracer:
        tracer = self._provider.get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url)
        return _ChildTracer(tracer)


class _ChildTracer(Tracer):
    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name: str, context: Context | None = None, *args: Any, **kwargs: Any) -> Span:
        if not trace.get_current_span(context).is_recording():
            return INVALID_SPAN
        return self._tracer.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, *args: Any, **kwargs: Any
    ) -> Iterator[Span]:
        if not trace.get_current_span(context).is_recording():
            yield INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, context, *args, **kwargs) as span:
            yield span
