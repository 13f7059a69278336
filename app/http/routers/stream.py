"""GET /sessions/{session_id}/stream, upgraded to a WebSocket: frames in, one JSON answer per frame out.

Thin: accept, check the caller, read messages into the stream's window, send each outcome. A frame is served by
the detection service exactly as /detect serves it (admission, deadline, tracking, history, uploads, metrics);
the protocol and the window are app/services/streams. docs/STREAMS.md describes the messages and close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from app.http.auth import key_check_of, owned_by, presented_key
from app.http.errors import error_body
from app.http.routers.detect import detect_response
from app.http.schemas.stream import (
    CLOSE_GOING_AWAY,
    CLOSE_IDLE,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_MISSING_SCOPE,
    CLOSE_NO_KEY,
    CLOSE_SESSION_ENDED,
    CLOSE_SESSION_NOT_FOUND,
    CLOSE_TOO_MANY_STREAMS,
    CLOSE_TRY_AGAIN_LATER,
    SHUTDOWN_EXTENSION,
    StreamFrameHeader,
)
from app.services.core.asyncio_tasks import cancel
from app.services.core.errors import ApiError, AuthRequired, SessionEnded, SessionNotFound, ValidationFailed
from app.services.core.request_context import set_request_id
from app.services.detection.service import DetectionService
from app.services.identity.principal import Principal, Scope, require_scope
from app.services.inference.types import DetectOptions
from app.services.observability.metrics import Metrics
from app.services.streams.protocol import FrameMessage, MessageRejected, auth_message, decode_frame
from app.services.streams.slots import Full, StreamSlots
from app.services.streams.window import Answered, Dropped, Failed, FrameWindow, Outcome
from app.services.tracking.meta import frame_meta
from app.settings import Settings, StreamSettings

# Checks the caller before any frame is read, by the key in the upgrade request's headers (key None) or the key of
# the stream's first message: returns who it is, or raises an ApiError to refuse (401 or 429: closed 4401; 403: 4403).
Authenticate = Callable[[HTTPConnection, str | None], Awaitable[Principal]]
DRAIN_MARGIN_SECONDS = 2.0  # past a frame's deadline: its tracking and history write still finish
SESSION_CLOSES = {SessionNotFound: CLOSE_SESSION_NOT_FOUND, SessionEnded: CLOSE_SESSION_ENDED}


async def detect_caller(connection: HTTPConnection, key: str | None) -> Principal:
    """The same key check and `detect` scope as POST /detect: the key in the upgrade request's headers, or `key`."""
    caller = await key_check_of(connection).caller_of(connection, key)
    require_scope(caller, Scope.DETECT)
    return caller


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


def outcome_message(outcome: Outcome) -> dict[str, Any]:
    """One frame's answer: /detect's fields, a drop, or the one error shape; each names the frame."""
    if isinstance(outcome, Answered):
        return {"frame_id": outcome.frame_id, **outcome.answer}
    if isinstance(outcome, Dropped):
        return {"frame_id": outcome.frame_id, "dropped": outcome.reason}
    error = outcome.error
    return {"frame_id": outcome.frame_id, **error_body(error.code, error.message, error.details)}


@dataclass(frozen=True)
class Opening:
    caller: Principal
    first: Message | None  # a message read while waiting for a key that is not one: the stream's first to take


async def first_message(websocket: WebSocket, seconds: float) -> Message | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            return await websocket.receive()
    return None


async def open_stream(websocket: WebSocket, authenticate: Authenticate, auth_seconds: float) -> Opening | Close | None:
    """Who calls, before any frame is read: by the upgrade's headers; without a key there, by a first text message
    `{"type": "auth", "api_key": ...}` awaited `auth_seconds` (without one, the headers decide: AUTH_MODE=off
    streams anonymously, keys mode closes 4401). None: the client left first. The key is never logged."""
    first = None
    if presented_key(websocket.headers) is None:
        first = await first_message(websocket, auth_seconds)
        if first is not None and first["type"] == "websocket.disconnect":
            return None
    auth = auth_message(first.get("text")) if first is not None else None
    if auth is not None and auth.api_key is None:
        return Close(CLOSE_NO_KEY, 'the auth message needs {"type": "auth", "api_key": "<key>"}')
    try:
        caller = await authenticate(websocket, auth.api_key if auth is not None else None)
    except ApiError as exc:
        return refusal(exc, auth_seconds)
    return Opening(caller, None if auth is not None else first)


def refusal(exc: ApiError, auth_seconds: float) -> Close:
    if isinstance(exc, AuthRequired):
        return Close(CLOSE_NO_KEY, f"no API key: send it in a header or a first auth message within {auth_seconds:g} s")
    return Close(CLOSE_MISSING_SCOPE if exc.status == 403 else CLOSE_NO_KEY, exc.message)


def create_stream_router(
    detection: DetectionService, metrics: Metrics, settings: Settings, authenticate: Authenticate = detect_caller
) -> APIRouter:
    limits = settings.streams
    router = APIRouter(tags=["stream"])
    slots = StreamSlots(limits.max_per_process, limits.max_per_key, metrics)

    @router.websocket("/sessions/{session_id}/stream")
    async def stream_frames(websocket: WebSocket, session_id: str) -> None:
        """Frames of one session over one WebSocket, the newest first (docs/STREAMS.md)."""
        await websocket.accept()  # a close code (rather than a bare HTTP 403) needs an accepted socket
        opening = await open_stream(websocket, authenticate, limits.auth_seconds)
        if opening is None:
            return
        if isinstance(opening, Close):
            metrics.streams_refused.labels("scope" if opening.code == CLOSE_MISSING_SCOPE else "key").inc()
            await websocket.close(opening.code, opening.reason)
            return
        with slots.hold(opening.caller.key_id) as full:
            if full is not None:
                metrics.streams_refused.labels("full" if full == "process" else "key_full").inc()
                await websocket.close(*FULL_CLOSES[full](limits))
                return
            await FrameStream(websocket, session_id, opening.caller, detection, metrics, settings).run(opening.first)

    return router


FULL_CLOSES: dict[Full, Callable[[StreamSettings], tuple[int, str]]] = {
    "process": lambda limits: (
        CLOSE_TRY_AGAIN_LATER,
        f"this process holds {limits.max_per_process} streams; try again later",
    ),
    "key": lambda limits: (
        CLOSE_TOO_MANY_STREAMS,
        f"this key holds {limits.max_per_key} streams (STREAM_MAX_PER_KEY); close one first",
    ),
}


class FrameStream:
    """One open stream: a reader of messages, a window of frames, a writer of answers, and how it ends."""

    def __init__(
        self,
        websocket: WebSocket,
        session_id: str,
        caller: Principal,
        detection: DetectionService,
        metrics: Metrics,
        settings: Settings,
    ) -> None:
        self._websocket = websocket
        self._session_id = session_id
        self._owner = owned_by(caller)  # another tenant's session answers as an unknown one
        self._device_profile = caller.device_profile  # the key's camera places the session's hazards
        self._detection = detection
        self._metrics = metrics
        self._settings = settings
        self._max_bytes = settings.stream_max_message_bytes
        self._closing: asyncio.Future[Close | None] = asyncio.get_running_loop().create_future()
        self._sending = asyncio.Lock()  # answers come from several frames' tasks; one message at a time
        self._window = FrameWindow(settings.streams.window, self._send, metrics)

    async def run(self, first: Message | None = None) -> None:
        reader = asyncio.create_task(self._read(first), name="stream-reader")
        watcher = asyncio.create_task(self._watch_shutdown(), name="stream-shutdown")
        try:
            close = await self._closing
        finally:
            await cancel(reader)
            await cancel(watcher)
            # Frames taken are answered (or, the client gone, finish) before the stream says goodbye.
            if not await self._window.wait_idle(self._settings.detection.timeout_seconds + DRAIN_MARGIN_SECONDS):
                self._window.cancel()
                await self._window.wait_idle(DRAIN_MARGIN_SECONDS)
        if close is not None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self._websocket.close(close.code, close.reason)

    def _end(self, close: Close | None) -> None:
        if not self._closing.done():
            self._closing.set_result(close)

    async def _read(self, first: Message | None) -> None:
        idle = self._settings.streams.idle_seconds
        message = first
        while True:
            if message is None:
                message = await first_message(self._websocket, idle)
            if message is None:
                return self._end(Close(CLOSE_IDLE, f"no message for {idle:g} s (STREAM_IDLE_SECONDS)"))
            if message["type"] == "websocket.disconnect":
                return self._end(None)
            data = message.get("bytes")
            if data is None:
                await self._window.deliver(Failed(None, ValidationFailed("Send each frame as one binary message.")))
                message = None
                continue
            if len(data) > self._max_bytes:
                reason = f"message of {len(data)} bytes; at most {self._max_bytes} (STREAM_MAX_MESSAGE_BYTES)"
                return self._end(Close(CLOSE_MESSAGE_TOO_BIG, reason))
            await self._take(data)
            message = None

    async def _take(self, data: bytes) -> None:
        self._metrics.stream_frames_received.inc()
        deadline = time.monotonic() + self._settings.detection.timeout_seconds  # from arrival, as /detect's
        frame = decode_frame(data)
        if isinstance(frame, MessageRejected):
            await self._window.deliver(Failed(frame.frame_id, ValidationFailed(frame.reason)))
            return
        try:
            header = StreamFrameHeader.model_validate(frame.header)
            meta = frame_meta({field: getattr(header, field) for field in FRAME_FIELDS}, {})
        except ValidationError as exc:
            await self._window.deliver(Failed(frame.frame_id, header_error(exc)))
            return
        except ApiError as exc:
            await self._window.deliver(Failed(frame.frame_id, exc))
            return
        await self._window.offer(frame.frame_id, lambda: self._serve(frame, header, meta, deadline))

    async def _serve(self, frame: FrameMessage, header: StreamFrameHeader, meta: Any, deadline: float) -> Any:
        request_id = uuid.uuid4().hex
        set_request_id(request_id)  # this frame's task: its error message and log lines name it
        detect = self._settings.detection
        options = DetectOptions(
            detect.default_confidence if header.conf is None else header.conf,
            detect.default_iou if header.iou is None else header.iou,
            detect.default_max_detections if header.max_det is None else header.max_det,
        )

        async def read_frame() -> bytes:
            return frame.image

        served = await self._detection.serve_frame(
            self._session_id,
            request_id,
            read_frame,
            options,
            deadline,
            header.model,
            frame_meta=lambda: meta,
            owner=self._owner,
            device_profile=self._device_profile,
        )
        return detect_response(served).model_dump(mode="json")

    async def _send(self, outcome: Outcome) -> None:
        ready = time.monotonic()
        async with self._sending:
            try:
                await self._websocket.send_text(json.dumps(outcome_message(outcome), separators=(",", ":")))
            except (WebSocketDisconnect, RuntimeError):  # gone: what is in flight finishes, unanswered
                return self._end(None)
        self._metrics.stream_send_lag.observe(time.monotonic() - ready)
        if isinstance(outcome, Failed) and type(outcome.error) in SESSION_CLOSES:
            self._end(Close(SESSION_CLOSES[type(outcome.error)], outcome.error.message))

    async def _watch_shutdown(self) -> None:
        shutdown = self._websocket.scope.get("extensions", {}).get(SHUTDOWN_EXTENSION)
        if shutdown is not None:
            await shutdown["event"].wait()
            self._end(Close(CLOSE_GOING_AWAY, "the server is shutting down; frames in flight were answered"))


FRAME_FIELDS = ("lat", "lon", "heading", "speed_mps", "captured_at")


def header_error(exc: ValidationError) -> ValidationFailed:
    """The header's problems in /detect's 422 shape (a location, a message, a type each)."""
    problems = [
        {"location": ["header", *(str(part) for part in error["loc"])], "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return ValidationFailed(details={"errors": problems})
