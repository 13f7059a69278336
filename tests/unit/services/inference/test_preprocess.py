"""Decoding and letterboxing: geometry round trips, EXIF orientation, and every kind of bad image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.services.core.errors import ImageTooLarge, InvalidImage
from app.services.inference.preprocess import LETTERBOX_FILL, decode, letterbox
from tests.support.images import encode, png_bomb, scene_with_hazards

INPUT = 320
MAX_PIXELS = 40_000_000


def image_with_block(width: int, height: int, block: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), block)
    return image


def block_in_batch(batch: np.ndarray) -> np.ndarray:
    """xyxy of the bright block in a letterboxed batch (pad is grey 114, background black)."""
    bright = batch[0, :, :, 0] > 200
    ys, xs = np.nonzero(bright)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


@pytest.mark.parametrize(("width", "height"), [(333, 517), (1280, 720), (721, 1281), (97, 61), (2000, 333)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_letterbox_maps_boxes_back_to_the_original(width: int, height: int, fmt: str) -> None:
    block = (width // 4, height // 3, width // 4 + max(8, width // 5), height // 3 + max(8, height // 5))
    data = encode(image_with_block(width, height, block), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    batch, transform = letterbox(decode(data, INPUT, INPUT, MAX_PIXELS), INPUT, INPUT)
    assert batch.shape == (1, INPUT, INPUT, 3) and batch.dtype == np.uint8
    assert (transform.width, transform.height) == (width, height)
    mapped = transform.to_original(block_in_batch(batch))[0]
    tolerance = 2.5 * max(width, height) / INPUT + 1  # one model-input pixel, in original pixels, plus blur
    assert np.abs(mapped - np.array(block)).max() <= tolerance


def test_letterbox_pads_with_the_training_fill_and_centres_the_image() -> None:
    batch, transform = letterbox(
        decode(encode(Image.new("RGB", (640, 320), (0, 0, 0)), "PNG"), INPUT, INPUT, MAX_PIXELS), INPUT, INPUT
    )
    assert (transform.pad_x, transform.pad_y) == (0, 80)
    assert tuple(batch[0, 0, 0]) == (LETTERBOX_FILL,) * 3
    assert tuple(batch[0, INPUT - 1, INPUT - 1]) == (LETTERBOX_FILL,) * 3
    assert tuple(batch[0, INPUT // 2, INPUT // 2]) == (0, 0, 0)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured(orientation: int) -> None:
    """The stored pixels are rotated; the camera's EXIF tag says how to show them upright."""
    upright = image_with_block(400, 200, (20, 30, 120, 80))
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(undo[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    batch, transform = letterbox(decode(data, INPUT, INPUT, MAX_PIXELS), INPUT, INPUT)
    assert (transform.width, transform.height) == (400, 200)
    mapped = transform.to_original(block_in_batch(batch))[0]
    assert np.abs(mapped - np.array([20, 30, 120, 80])).max() <= 4


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    decoded = decode(encode(Image.new("RGB", (2560, 1440)), quality=80), INPUT, INPUT, MAX_PIXELS)
    assert (decoded.width, decoded.height) == (2560, 1440)
    assert decoded.image.size[0] < 2560 and decoded.image.size[0] >= 320


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"definitely not an image", InvalidImage),
        (encode(Image.new("RGB", (640, 480)), quality=90)[:300], InvalidImage),
        (encode(Image.new("RGB", (64, 64)), "GIF"), InvalidImage),
        (b"\xff\xd8\xff\xe0" + b"\0" * 100, InvalidImage),
        (png_bomb(100_000, 100_000), ImageTooLarge),
        (png_bomb(7_000, 7_000), ImageTooLarge),
    ],
    ids=["empty", "garbage", "truncated-jpeg", "gif", "jpeg-magic-only", "png-bomb", "over-pixel-limit"],
)
def test_bad_images_raise_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decoded = decode(data, INPUT, INPUT, MAX_PIXELS)
        letterbox(decoded, INPUT, INPUT)


def test_truncated_png_is_invalid() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buffer, "PNG")
    with pytest.raises(InvalidImage):
        letterbox(decode(buffer.getvalue()[: len(buffer.getvalue()) // 2], INPUT, INPUT, MAX_PIXELS), INPUT, INPUT)


def _png_with_zeroed_data() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    return data[:100] + bytes(200) + data[300:]  # IDAT bytes zeroed: the header parses, the stream does not


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty image"),
        (b"definitely not an image", "unrecognized image format"),
        (encode(Image.new("RGB", (64, 64)), "GIF"), "unrecognized image format"),
        (encode(Image.new("RGB", (640, 480)), quality=90)[:300], "truncated image data"),
        (scene_with_hazards(seed=3, size=(320, 240))[1][:4000], "truncated image data"),
        (_png_with_zeroed_data(), "corrupt image data"),
    ],
    ids=["empty", "garbage", "gif", "truncated-jpeg-header", "truncated-jpeg-scan", "corrupt-png"],
)
def test_invalid_image_details_give_a_stable_reason_without_object_reprs(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        letterbox(decode(data, INPUT, INPUT, MAX_PIXELS), INPUT, INPUT)
    assert caught.value.details == {"reason": reason}
    # Pillow's messages carry reprs such as "<_io.BytesIO object at 0x7f...>": none may reach a client.
    for leak in ("<", ">", "0x", "object at", "BytesIO"):
        assert leak not in caught.value.message + str(caught.value.details)
