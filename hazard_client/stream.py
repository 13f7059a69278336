"""A live frame stream over one WebSocket (`GET /sessions/{id}/stream`): send frames, iterate the answers.

    async with AsyncHazardClient(url) as client:
        async with client.stream(session_id) as stream:
            await stream.send(jpeg_bytes, frame_id=1, lat=52.52, lon=13.40)
            async for answer in stream:
                print(answer)  # /detect's fields + frame_id; or {"frame_id", "dropped"}; or {"frame_id", "error"}

One message per frame: [4-byte big-endian header length N][N bytes of UTF-8 JSON header][image bytes]
(docs/STREAMS.md). The server keeps at most STREAM_WINDOW frames in flight and answers a replaced frame
`dropped: superseded`; every frame sent gets exactly one answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from itertools import count
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

HEADER_LENGTH_BYTES = 4


def frame_message(header: Mapping[str, Any], image: bytes) -> bytes:
    encoded = json.dumps(dict(header), separators=(",", ":")).encode("utf-8")
    return len(encoded).to_bytes(HEADER_LENGTH_BYTES, "big") + encoded + image


def stream_url(base_url: str, session_id: str) -> str:
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/sessions/{session_id}/stream"


class FrameStream:
    """One open stream. `close_code` / `close_reason` say how it ended (docs/STREAMS.md lists the codes)."""

    def __init__(self, url: str, headers: Mapping[str, str], max_size: int | None = None) -> None:
        self._url = url
        self._headers = dict(headers)
        self._max_size = max_size
        self._connection: ClientConnection | None = None
        self._ids = count()

    async def __aenter__(self) -> Self:
        self._connection = await connect(
            self._url, additional_headers=self._headers, max_size=self._max_size, compression=None
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.connection.close()

    @property
    def connection(self) -> ClientConnection:
        if self._connection is None:
            raise RuntimeError("use the stream in `async with`")
        return self._connection

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    async def send(self, image: bytes, frame_id: str | int | None = None, **header: Any) -> str | int:
        """Send one frame (JPEG, PNG or WebP bytes); `header`: conf, iou, max_det, model, lat, lon, heading,
        speed_mps, captured_at. Returns the frame's id (numbered from 0 when not given)."""
        frame_id = next(self._ids) if frame_id is None else frame_id
        fields = {key: value for key, value in header.items() if value is not None}
        await self.connection.send(frame_message({"frame_id": frame_id, **fields}, image))
        return frame_id

    async def receive(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(await self.connection.recv())
        return answer

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """The answers until the stream closes (a server's close other than 1000 raises ConnectionClosed)."""
        try:
            while True:
                yield await self.receive()
        except ConnectionClosedOK:
            return
