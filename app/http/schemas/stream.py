"""A stream's frame header and close codes: the fields and ranges are /detect's own (FrameMeta and its options)."""

from __future__ import annotations

from pydantic import Field

from app.http.schemas.frames import CONF, DESCRIPTIONS, IOU, MAX_DET, FrameMeta


class StreamFrameHeader(FrameMeta):
    """The JSON header of one frame message, `frame_id` aside (the protocol reads it first, to answer by it)."""

    conf: float | None = Field(None, ge=CONF[0], le=CONF[1])
    iou: float | None = Field(None, ge=IOU[0], le=IOU[1])
    max_det: int | None = Field(None, ge=MAX_DET[0], le=MAX_DET[1])
    model: str | None = Field(None, max_length=128, description="A loaded model version; the active one by default.")
    # Text, checked by the tracking service exactly as /detect's query parameter is (RFC 3339 with an offset).
    captured_at: str | None = Field(None, max_length=64, description=DESCRIPTIONS["captured_at"])  # type: ignore[assignment]


# WebSocket close codes of a stream (RFC 6455 ones, and 4000 + the HTTP status /detect would answer).
CLOSE_NORMAL = 1000  # the client closed
CLOSE_GOING_AWAY = 1001  # the server shuts down: frames in flight were answered first
CLOSE_INTERNAL_ERROR = 1011
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013  # this process holds STREAM_MAX_PER_PROCESS streams
CLOSE_NO_KEY = 4401  # no API key, or not a valid one
CLOSE_MISSING_SCOPE = 4403  # a valid key without the scope streaming needs
CLOSE_SESSION_NOT_FOUND = 4404
CLOSE_TOO_MANY_STREAMS = 4429  # this key holds STREAM_MAX_PER_KEY streams in this process
CLOSE_IDLE = 4408  # no message for STREAM_IDLE_SECONDS
CLOSE_SESSION_ENDED = 4409

# The ASGI scope extension through which the server (app/entrypoints/websocket.py) tells a stream it is shutting
# down: `{"event": asyncio.Event}`, set when it begins. Other servers close streams their own way (uvicorn: 1012).
SHUTDOWN_EXTENSION = "hazard.shutdown"
