"""Bytes -> oriented RGB image -> letterboxed uint8 NHWC batch, plus the transform to map boxes back."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from math import ceil

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from app.services.core.errors import ImageTooLarge, InvalidImage

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
LETTERBOX_FILL = 114  # Ultralytics' pad grey (114, 114, 114); the model was trained with it
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Letterbox:
    """Maps model-input pixels back to the original (EXIF-oriented) image."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int

    def to_original(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """xyxy boxes in model-input pixels -> xyxy in original pixels, clipped to the image."""
        out = np.empty_like(boxes)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.height)
        return out


def invalid_image_reason(exc: BaseException) -> str:
    """A stable reason for the client: Pillow's own messages can carry object reprs and memory addresses."""
    if isinstance(exc, UnidentifiedImageError):
        return "unrecognized image format"  # garbage, or a format other than JPEG, PNG, WebP
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return "truncated image data"
    return "corrupt image data"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("The image is empty.", details={"reason": "empty image"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLarge("The image has too many pixels.", details={"max_pixels": max_pixels}) from exc
    except Exception as exc:  # untrusted bytes: Pillow's parsers raise many types (OSError, struct.error, ...)
        raise InvalidImage(details={"reason": invalid_image_reason(exc)}) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            "The image has too many pixels.", details={"width": width, "height": height, "max_pixels": max_pixels}
        )
    return image


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels, possibly decoded at reduced scale, and the size of the full oriented image."""

    image: Image.Image
    width: int
    height: int


def decode(
    data: bytes, input_height: int, input_width: int, max_pixels: int, max_decode_pixels: int | None = None
) -> DecodedImage:
    """Decode at the smallest scale that still fills the model input, honouring EXIF orientation.

    `max_decode_pixels` bounds the CPU one frame costs: the pixels that would really be decoded (a JPEG's after
    draft scaling; a PNG's or WebP's all of them, neither can be decoded at reduced scale) are checked from the
    header, before any pixel is decoded. Lossless WebP decodes ~20 ns a pixel here: a 40-byte 6000x6600 frame
    costs ~0.9 s, 3840x2160 ~25 ms.
    """
    image = _open(data, max_pixels)
    try:
        return _decode_oriented(image, input_height, input_width, max_decode_pixels or max_pixels)
    except ImageTooLarge:
        raise
    except Exception as exc:  # truncated or corrupt data shows up only now, as any of several types
        raise InvalidImage(details={"reason": invalid_image_reason(exc)}) from exc


def _decode_oriented(image: Image.Image, input_height: int, input_width: int, max_decode_pixels: int) -> DecodedImage:
    raw_width, raw_height = image.size
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    transposed = orientation in _TRANSPOSED_ORIENTATIONS
    width, height = (raw_height, raw_width) if transposed else (raw_width, raw_height)
    ratio = min(input_width / width, input_height / height)
    if image.format == "JPEG" and ratio < 1:
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale directly: less work for big frames.
        image.draft("RGB", (ceil(raw_width * ratio), ceil(raw_height * ratio)))
    decoded_width, decoded_height = image.size  # after draft: what decoding will really produce
    if decoded_width * decoded_height > max_decode_pixels:
        raise ImageTooLarge(
            "The image would cost too much to decode: send it smaller (or as JPEG, which decodes at reduced scale).",
            details={
                "width": raw_width,
                "height": raw_height,
                "format": image.format,
                "max_decode_pixels": max_decode_pixels,
            },
        )
    # convert() and exif_transpose() each copy the pixels even when there is nothing to do: only call them if needed.
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.load()
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return DecodedImage(image, width, height)


def letterbox(decoded: DecodedImage, input_height: int, input_width: int) -> tuple[npt.NDArray[np.uint8], Letterbox]:
    """Resize keeping aspect ratio and pad to the model input: uint8 NHWC, batch of one."""
    ratio = min(input_width / decoded.width, input_height / decoded.height)
    resized_width = max(1, round(decoded.width * ratio))
    resized_height = max(1, round(decoded.height * ratio))
    image = decoded.image
    if image.size != (resized_width, resized_height):
        image = image.resize((resized_width, resized_height), Image.Resampling.BILINEAR)
    pad_x = round((input_width - resized_width) / 2 - 0.1)
    pad_y = round((input_height - resized_height) / 2 - 0.1)
    batch = np.full((1, input_height, input_width, 3), LETTERBOX_FILL, np.uint8)
    batch[0, pad_y : pad_y + resized_height, pad_x : pad_x + resized_width] = np.asarray(image)
    transform = Letterbox(
        resized_width / decoded.width, resized_height / decoded.height, pad_x, pad_y, decoded.width, decoded.height
    )
    return batch, transform
