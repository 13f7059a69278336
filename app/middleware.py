"""Plain ASGI middleware (no BaseHTTPMiddleware on the hot path): request id, access log, latency, body limit."""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from app.request_context import set_request_id
from app.services.errors import ApiError, ImageTooLarge
from app.services.ids import SAFE_ID
from app.services.metrics import Metrics

access_log = structlog.get_logger("access")


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
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
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
        access_log.info(
            "request",
            method=scope["method"],
            route=template,
            path=scope["path"],
            status=status,
            latency_ms=round(elapsed * 1000, 2),
        )


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit from Content-Length at once, and while streaming when it is absent or lies."""

    def __init__(self, app: ASGIApp, default_limit: int, prefix_limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.prefix_limits = prefix_limits

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.prefix_limits.items():
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(limit, scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _reject(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        error = _too_large(limit)
        await error_response(error.status, error.code, error.message, error.details)(scope, receive, send)


def _too_large(limit: int) -> ApiError:
    return ImageTooLarge("The request body exceeds the size limit.", details={"max_bytes": limit})
