"""One frame message of a stream: [4-byte big-endian header length N][N bytes of UTF-8 JSON header][image bytes].

The header is a JSON object naming the frame (`frame_id`, chosen by the client) and, optionally, /detect's options
and the frame's metadata; what those fields may hold is checked by the caller against /detect's own ranges. A
message that cannot be read is a value (`MessageRejected`), not an exception: the stream answers it and lives on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

HEADER_LENGTH_BYTES = 4
MAX_HEADER_BYTES = 16 * 1024  # a header names a frame and a few numbers; more is not a header
MAX_FRAME_ID_CHARS = 128
FrameId = str | int


@dataclass(frozen=True)
class FrameMessage:
    frame_id: FrameId
    header: dict[str, Any]  # every field but frame_id, as sent
    image: bytes


@dataclass(frozen=True)
class MessageRejected:
    frame_id: FrameId | None  # when the header could be read that far
    reason: str


def _frame_id(header: dict[str, Any]) -> FrameId | None:
    value = header.get("frame_id")
    if isinstance(value, bool):  # JSON true is not an id, though Python counts it as an int
        return None
    if isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= MAX_FRAME_ID_CHARS):
        return value
    return None


def _header(data: bytes) -> dict[str, Any] | MessageRejected:
    if len(data) < HEADER_LENGTH_BYTES:
        return MessageRejected(None, f"a frame message starts with a {HEADER_LENGTH_BYTES}-byte header length")
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], "big")
    if length > MAX_HEADER_BYTES or length > len(data) - HEADER_LENGTH_BYTES:
        return MessageRejected(None, f"header length {length} exceeds the message or {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return MessageRejected(None, "the header is not UTF-8 JSON")
    if not isinstance(header, dict):
        return MessageRejected(None, "the header is not a JSON object")
    return header


def decode_frame(data: bytes) -> FrameMessage | MessageRejected:
    """The frame a binary message carries, or why it carries none."""
    header = _header(data)
    if isinstance(header, MessageRejected):
        return header
    frame_id = _frame_id(header)
    if frame_id is None:
        return MessageRejected(None, f"the header needs a frame_id: an integer or 1-{MAX_FRAME_ID_CHARS} characters")
    image = data[HEADER_LENGTH_BYTES + int.from_bytes(data[:HEADER_LENGTH_BYTES], "big") :]
    if not image:
        return MessageRejected(frame_id, "no image bytes follow the header")
    fields = {key: value for key, value in header.items() if key != "frame_id"}
    return FrameMessage(frame_id, fields, image)


def encode_frame(header: dict[str, Any], image: bytes) -> bytes:
    """The message for `header` (with its frame_id) and `image`: what clients send."""
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return len(encoded).to_bytes(HEADER_LENGTH_BYTES, "big") + encoded + image


AUTH_TYPE = "auth"
MAX_AUTH_MESSAGE_CHARS = 4096


@dataclass(frozen=True)
class AuthMessage:
    """`{"type": "auth", "api_key": "hzk_..."}`: the key of a stream whose upgrade carried none (browsers cannot
    set headers on a WebSocket upgrade). `api_key` None: the message is an auth message without a usable key."""

    api_key: str | None


def auth_message(text: str | None) -> AuthMessage | None:
    """The auth message a text message is, or None when it is not one (a frame sent as text, say)."""
    if text is None or len(text) > MAX_AUTH_MESSAGE_CHARS:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != AUTH_TYPE:
        return None
    key = message.get("api_key")
    return AuthMessage(key.strip() if isinstance(key, str) and key.strip() else None)


def encode_auth(api_key: str) -> str:
    """The first message of a client that cannot send its key in the upgrade's headers."""
    return json.dumps({"type": AUTH_TYPE, "api_key": api_key}, separators=(",", ":"))
