"""A body that does not arrive within its deadline is refused (408), so a slow client holds nothing for long."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import error_response
from app.services.core.errors import (
    RequestTimeout,
)


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
