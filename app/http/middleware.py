"""Plain ASGI middleware (no BaseHTTPMiddleware on the hot path): request id, access log, latency, body limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import error_response
from app.services.core.errors import (
    CLIENT_DISCONNECTED,
    ApiError,
    ClientClosedRequest,
    ImageTooLarge,
    PayloadTooLarge,
    RequestTimeout,
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


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit from Content-Length at once, and while streaming when it is absent or lies.

    Paths under `image_prefix` carry frames (413 IMAGE_TOO_LARGE): a raw image body may be `image_limit` bytes,
    a multipart body `multipart_overhead` more for its envelope (the router caps the file part itself at
    `image_limit`). Paths under `batch_prefix` carry many frames at once and get `batch_limit` (413
    PAYLOAD_TOO_LARGE). Every other route takes small JSON bodies and gets `default_limit` (413 PAYLOAD_TOO_LARGE).
    """

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        image_prefix: str,
        image_limit: int,
        multipart_overhead: int,
        batch_prefix: str,
        batch_limit: int,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.image_prefix = image_prefix
        self.image_limit = image_limit
        self.multipart_overhead = multipart_overhead
        self.batch_prefix = batch_prefix
        self.batch_limit = batch_limit

    def _limit(self, path: str, headers: dict[bytes, bytes]) -> int:
        if path.startswith(self.batch_prefix):
            return self.batch_limit
        if not path.startswith(self.image_prefix):
            return self.default_limit
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        return self.image_limit + (self.multipart_overhead if media_type == b"multipart/form-data" else 0)

    def _too_large(self, path: str) -> ApiError:
        if path.startswith(self.image_prefix):
            # The image limit, not the body limit: that is the figure a client can act on.
            return ImageTooLarge("The request body exceeds the size limit.", details={"max_bytes": self.image_limit})
        return PayloadTooLarge(details={"max_bytes": self._limit(path, {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        limit = self._limit(path, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = self._too_large(path)
            await error_response(error.status, error.code, error.message, error.details)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise self._too_large(path)
            return message

        await self.app(scope, counting_receive, send)


class _BodyTimedOut(Exception):
    """Raised into the app from `receive` when the body is late; the middleware answers 408 whatever the app did."""


class BodyDeadlineMiddleware:
    """Every request's whole body must arrive within `seconds` of the request, or it is answered 408 REQUEST_TIMEOUT
    and its connection closed.

    A client trickling its body (1 B/s) would otherwise hold its request, a connection and, at shutdown, the process
    (uvicorn waits for every request unless told `--timeout-graceful-shutdown`): with this, a stop takes at most
    this long plus the app's own drain, whatever flags the server was started with. Reads after the body (waiting
    for a disconnect) are not limited.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = timed_out = started = False

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise _BodyTimedOut from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_unless_late(message: Message) -> None:
            nonlocal started
            if timed_out and not started:
                return  # whatever the app made of the interrupted read (a 400, a 500), the answer is 408
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_unless_late)
        except _BodyTimedOut:
            pass
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            error = RequestTimeout(details={"timeout_seconds": self.seconds})
            response = error_response(error.status, error.code, error.message, error.details)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
