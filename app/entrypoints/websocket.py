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
