"""Request id, access log and latency of every request: plain ASGI, no BaseHTTPMiddleware on the hot path."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import error_response
from app.services.core.errors import (
    CLIENT_DISCONNECTED,
    ClientClosedRequest,
)
from app.services.core.ids import SAFE_ID
from app.services.core.request_context import set_request_id
from app.services.observability.metrics import Metrics

access_log = structlog.get_logger("access")
NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestContextMiddleware:
    """Assigns or propagates X-Request-ID, logs one access line, records latency, and turns any
    unhandled exception into the one error shape (inside this middleware, so the header is kept)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if SAFE_ID.match(incoming) else uuid.uuid4().hex
        set_request_id(request_id)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                # nosniff on every answer, errors included: a browser never runs a served frame or error as script.
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()), NOSNIFF]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left mid-request (a route read its body after it hung up): no one to answer, no bug.
            # Counted and logged as nginx's 499, without a stack trace; routes that know raise ClientClosedRequest.
            structlog.contextvars.bind_contextvars(reason=CLIENT_DISCONNECTED)
            if not response_started:
                status = ClientClosedRequest.status
        except Exception as exc:
            access_log.exception("unhandled_exception", exc_type=type(exc).__name__)
            if response_started:
                raise
            await error_response(500, "INTERNAL_ERROR", "Internal server error.")(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.request_latency.labels(template, scope["method"], str(status)).observe(elapsed)
        self.metrics.recent_detect.observe(template, status, elapsed)
        access_log.info(
            "request",
            method=scope["method"],
            route=template,
            path=scope["path"],
            status=status,
            latency_ms=round(elapsed * 1000, 2),
        )
