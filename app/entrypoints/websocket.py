"""uvicorn's WebSocket protocol, with a graceful shutdown for frame streams.

uvicorn closes every WebSocket at once when it shuts down (1012), frames in flight unanswered. This protocol
first tells the stream (an `asyncio.Event` in the scope's `hazard.shutdown` extension): the stream stops reading,
answers what it has in flight, and closes with 1001. A stream still open after `grace_seconds` is closed
uvicorn's way. uvicorn waits for connections to close (its graceful-shutdown timeout) before the app's lifespan
shutdown, so the frames are served while the engine is still up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from app.http.schemas.stream import SHUTDOWN_EXTENSION

WS_PING_SECONDS = 20.0


def websocket_options(max_message_bytes: int) -> dict[str, Any]:
    """What uvicorn is given for frame streams (hazard-api, and the stream tests' servers)."""
    return {
        "ws": GracefulWebSocketProtocol,  # frame streams answer what is in flight, then close 1001
        "ws_max_size": max_message_bytes,  # a bigger message is not read (1009)
        "ws_ping_interval": WS_PING_SECONDS,  # a silent peer is pinged; one that does not pong is closed
        "ws_ping_timeout": WS_PING_SECONDS,
        # Frames are JPEG, PNG or WebP, compressed already: permessage-deflate (offered by websockets' client, taken
        # by default) spent ~9 ms of a frame's 25 ms P50 at 5 frames/s deflating ~250 KB messages for nothing.
        "ws_per_message_deflate": False,
    }


class GracefulWebSocketProtocol(WebSocketsSansIOProtocol):
    grace_seconds: float = 5.0  # a frame's deadline (REQUEST_TIMEOUT_SECONDS) and its record fit well within

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_asked = asyncio.Event()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][SHUTDOWN_EXTENSION] = {"event": self.shutdown_asked}

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.shutdown_asked.set()
            self.loop.call_later(self.grace_seconds, self._shutdown_now)
            return
        super().shutdown()

    def _shutdown_now(self) -> None:
        if not self.disconnected:
            super().shutdown()
