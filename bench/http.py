"""A lean HTTP/1.1 client for the load generator: keep-alive connections, one request in flight on each.

httpx costs ~2.7 ms of client CPU per 251 KB POST on this machine (a raw asyncio client 0.4 ms against a server that
answers at once: docs/PERFORMANCE.md). On 2 cores shared with the server that is both added to every latency and taken
from the server at high rates: the generator must not be what is measured. This one sends a prepared request head and
the body, and reads a response framed by Content-Length (uvicorn's and the peer's JSON answers always are).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

_CRLF2 = b"\r\n\r\n"
# A connection idle longer is closed, not reused: servers close idle keep-alive connections (ours after 5 s), and a
# request sent as the server closes one is lost with it. A new loopback connection costs ~0.1 ms.
MAX_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ProtocolError(Exception):
    """The server's answer was not HTTP/1.1 this client can read (no Content-Length, malformed head)."""


# What a request can fail with short of an answer: refused or reset connections, timeouts, cut or unreadable answers.
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def reusable(self) -> bool:
        fresh = time.monotonic() - self.idle_since < MAX_IDLE_SECONDS
        return fresh and not self.reader.at_eof() and not self.writer.is_closing()


class LeanClient:
    """`async with LeanClient("http://127.0.0.1:8000") as client: await client.post(path, body, content_type)`."""

    def __init__(self, url: str, timeout: float = 30.0, api_key: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"plain http://host:port only: {url}")
        self._host, self._port = parsed.hostname, parsed.port or 80
        self._timeout = timeout
        # Sent as `Authorization: Bearer` on every request: the service's API key (or nothing, AUTH_MODE=off).
        self._auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self._idle:
            connection.writer.close()
        self._idle.clear()

    async def post(self, path: str, body: bytes = b"", content_type: str = "application/octet-stream") -> Answer:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self._host}:{self._port}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n{self._auth}\r\n"
        ).encode("latin-1")
        connection = await self._connection()
        try:
            async with asyncio.timeout(self._timeout):
                connection.writer.write(head)
                connection.writer.write(body)
                answer, keep_alive = await _read_answer(connection.reader)
        except BaseException:
            connection.writer.close()  # its state is unknown: never reuse it
            raise
        if keep_alive:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.writer.close()
        return answer

    async def _connection(self) -> _Connection:
        """The most recently used idle connection that can still be trusted, else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            connection.writer.close()
        async with asyncio.timeout(self._timeout):
            reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    head = await reader.readuntil(_CRLF2)
    status_line, *header_lines = head[: -len(_CRLF2)].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ProtocolError(f"bad status line: {status_line!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ProtocolError("an answer without Content-Length")
    body = await reader.readexactly(int(headers["content-length"]))
    keep_alive = headers.get("connection", "").lower() != "close"
    return Answer(int(rest[:3]), headers, body), keep_alive
