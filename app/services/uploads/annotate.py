"""Draw detections on a frame: a box and a "label confidence" caption per hazard, re-encoded as JPEG.

CPU work (decode, draw, encode): callers run it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from app.services.inference.types import Detection
from app.services.uploads.privacy import UploadPrivacy, blur_outside_hazards

# One colour per class id: saturated, distinct from road greys, sky and grass, and dark enough for white captions.
PALETTE = ((220, 38, 38), (37, 99, 235), (217, 119, 6), (22, 163, 74), (147, 51, 234), (13, 148, 136))
CAPTION_TEXT = (255, 255, 255)
JPEG_QUALITY = 85


def annotate(image: bytes, detections: Sequence[Detection], privacy: UploadPrivacy = UploadPrivacy.FULL) -> bytes:
    """The frame, EXIF-oriented like the detector saw it, with its detections drawn on, as JPEG bytes;
    with `hazards_only` privacy, blurred outside the hazards first. Every stored or uploaded frame is made here."""
    with Image.open(io.BytesIO(image)) as opened:
        frame = ImageOps.exif_transpose(opened).convert("RGB")
    if privacy is UploadPrivacy.HAZARDS_ONLY:
        frame = blur_outside_hazards(frame, detections)
    draw = ImageDraw.Draw(frame)
    short_side = min(frame.size)
    stroke = max(2, round(short_side / 300))
    font = ImageFont.load_default(size=max(12, round(short_side / 40)))
    for detection in detections:
        _draw_detection(draw, detection, PALETTE[detection.class_id % len(PALETTE)], stroke, font)
    encoded = io.BytesIO()
    frame.save(encoded, format="JPEG", quality=JPEG_QUALITY)
    return encoded.getvalue()


def _draw_detection(
    draw: ImageDraw.ImageDraw,
    detection: Detection,
    color: tuple[int, int, int],
    stroke: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    draw.rectangle((detection.x1, detection.y1, detection.x2, detection.y2), outline=color, width=stroke)
    caption = f"{detection.label} {detection.confidence:.2f}"
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
    width, height = right - left + 2 * stroke, bottom - top + 2 * stroke
    # Above the box when there is room, otherwise just inside its top edge.
    y = detection.y1 - height if detection.y1 >= height else detection.y1
    draw.rectangle((detection.x1, y, detection.x1 + width, y + height), fill=color)
    draw.text((detection.x1 + stroke - left, y + stroke - top), caption, fill=CAPTION_TEXT, font=font)
