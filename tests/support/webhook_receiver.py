"""A real HTTP receiver for webhook tests, on 127.0.0.1 and a free port, in a thread: it keeps what it was sent
and answers `status` (a test sets 500 to play a broken receiver, 200 to fix it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waiting import wait_for


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.status = 200

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def keep(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def of_type(self, event: str) -> list[Received]:
        return [item for item in self.received if item.status == 200 and item.json["type"] == event]

    async def arrived(self, event: str, count: int = 1, within: float = 15.0) -> list[Received]:
        """The `event` deliveries once exactly `count` have arrived (sent off the request path: polled, bounded)."""

        async def all_there() -> bool:
            return len(self.of_type(event)) == count

        await wait_for(all_there, f"{count} {event} at the receiver", within=within)
        return self.of_type(event)


def signature_is_valid(secret: str, received: Received) -> bool:
    """Verified the way a receiver would: recompute the HMAC over `<t>.<body>` and compare in constant time."""
    fields = dict(part.split("=", 1) for part in received.headers["hazard-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder[0]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.status
            receiver.keep(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads what it received
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
