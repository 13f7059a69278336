"""MAX_IMAGE_BYTES to the byte: a raw frame of exactly the limit is decoded, one byte more is refused before it
reaches the decoder (Content-Length or streamed); multipart gets room for its envelope, never for a larger file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from PIL import Image

from app.settings import Settings
from tests.conftest import RunningApp
from tests.support.images import encode

LIMIT = 4096
CHUNK = 1000  # not a divisor of LIMIT: the last chunk is the one that crosses the limit
SMALL_JPEG = encode(Image.new("RGB", (64, 48), (200, 40, 40)), quality=90)


def padded_jpeg(size: int) -> bytes:
    """A valid JPEG of exactly `size` bytes: Pillow stops at the end-of-image marker and ignores what follows,
    so a body one byte over the limit would decode too if it got through."""
    assert len(SMALL_JPEG) < size
    return SMALL_JPEG + b"\0" * (size - len(SMALL_JPEG))


async def in_chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


@pytest.fixture
async def limited(
    start_app: Callable[[Settings], Awaitable[RunningApp]], make_settings: Callable[..., Settings]
) -> RunningApp:
    return await start_app(make_settings(max_image_bytes=LIMIT))


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "IMAGE_TOO_LARGE"
    assert error["details"] == {"max_bytes": LIMIT}


def assert_decoded(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 64, "height": 48}


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_raw_body_of_exactly_the_limit_is_decoded(limited: RunningApp, streamed: bool) -> None:
    session_id = await limited.new_session()
    body = padded_jpeg(LIMIT)
    response = await limited.client.post(
        f"/detect/{session_id}", content=in_chunks(body) if streamed else body, headers={"content-type": "image/jpeg"}
    )
    assert ("content-length" in response.request.headers) is not streamed
    assert_decoded(response)


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_raw_body_one_byte_over_the_limit_is_413(limited: RunningApp, streamed: bool) -> None:
    session_id = await limited.new_session()
    body = padded_jpeg(LIMIT + 1)
    response = await limited.client.post(
        f"/detect/{session_id}", content=in_chunks(body) if streamed else body, headers={"content-type": "image/jpeg"}
    )
    assert ("content-length" in response.request.headers) is not streamed
    assert_too_large(response)


async def test_multipart_file_of_exactly_the_limit_is_decoded(limited: RunningApp) -> None:
    session_id = await limited.new_session()
    response = await limited.client.post(
        f"/detect/{session_id}", files={"file": ("frame.jpg", padded_jpeg(LIMIT), "image/jpeg")}
    )
    assert int(response.request.headers["content-length"]) > LIMIT  # the envelope's allowance was needed
    assert_decoded(response)


async def test_multipart_file_one_byte_over_the_limit_is_413(limited: RunningApp) -> None:
    session_id = await limited.new_session()
    response = await limited.client.post(
        f"/detect/{session_id}", files={"file": ("frame.jpg", padded_jpeg(LIMIT + 1), "image/jpeg")}
    )
    assert_too_large(response)
