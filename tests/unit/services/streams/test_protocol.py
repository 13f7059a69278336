"""A frame message is read into a typed frame, or a typed rejection saying why."""

from __future__ import annotations

from app.services.streams.protocol import (
    AuthMessage,
    FrameMessage,
    MessageRejected,
    auth_message,
    decode_frame,
    encode_auth,
    encode_frame,
)


def test_a_frame_message_round_trips() -> None:
    frame = decode_frame(encode_frame({"frame_id": 7, "conf": 0.3}, b"jpeg"))
    assert frame == FrameMessage(7, {"conf": 0.3}, b"jpeg")


def test_unreadable_messages_are_rejections_not_exceptions() -> None:
    assert isinstance(decode_frame(b"\x00"), MessageRejected)
    assert isinstance(decode_frame(b"\x00\x00\x00\x05nope!jpeg"), MessageRejected)
    assert isinstance(decode_frame(b"\xff\xff\xff\xffjpeg"), MessageRejected)
    no_id = decode_frame(encode_frame({"conf": 0.3}, b"jpeg"))
    assert isinstance(no_id, MessageRejected) and "frame_id" in no_id.reason
    assert decode_frame(encode_frame({"frame_id": True}, b"jpeg")).frame_id is None


def test_a_header_without_an_image_is_rejected_naming_the_frame() -> None:
    rejected = decode_frame(encode_frame({"frame_id": "a"}, b""))
    assert isinstance(rejected, MessageRejected) and rejected.frame_id == "a"


def test_an_auth_message_gives_its_key_and_other_text_is_no_auth_message() -> None:
    assert auth_message(encode_auth("hzk_abc")) == AuthMessage("hzk_abc")
    assert auth_message('{"type": "auth"}') == AuthMessage(None)  # an auth message without a usable key
    assert auth_message('{"type": "auth", "api_key": 7}') == AuthMessage(None)
    for text in (None, "", "not json", "[]", '{"type": "frame"}', '{"type": "auth", "api_key": "' + "k" * 5000 + '"}'):
        assert auth_message(text) is None
