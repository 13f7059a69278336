"""The API's server spans: FastAPI instrumented when this process traces (app/services/observability/tracing.py)."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from app.services.observability.tracing import configure_tracing

# Scrapes and probes come every few seconds from every replica: traced, they would bury the frames' traces.
UNTRACED_URLS = "/metrics$,/health/"


def trace_requests(app: FastAPI) -> None:
    """One server span per request, the W3C `traceparent` of the caller continued; nothing when tracing is off."""
    provider = configure_tracing("hazard-api")
    if provider is None:
        return
    # No spans for each ASGI receive/send message: two or three more per request, and nothing to learn from them.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"]
    )
