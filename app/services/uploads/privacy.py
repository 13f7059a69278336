"""What of a stored frame is kept sharp: all of it, or only the hazards (passers-by's faces and plates blurred).

CPU work: runs inside `annotate`, in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from PIL import Image

from app.services.inference.types import Detection

# Each side of a hazard's box grows by this share of the box's size: the road just around it stays readable.
BOX_MARGIN = 0.15
# The blurred background is the frame shrunk to this share of its size and scaled back: at 1280x720 a face of
# 40 px becomes 2 to 3 soft cells, and shrinking is far cheaper than a Gaussian blur of the same strength.
BLUR_SCALE = 1 / 24


class UploadPrivacy(StrEnum):
    FULL = "full"  # the whole frame, as the camera saw it
    HAZARDS_ONLY = "hazards_only"  # everything outside the hazards' (grown) boxes blurred


def grown_box(detection: Detection, size: tuple[int, int], margin: float = BOX_MARGIN) -> tuple[int, int, int, int]:
    """The detection's box grown by `margin` of its width and height on each side, clipped to the frame."""
    width, height = size
    grow_x = (detection.x2 - detection.x1) * margin
    grow_y = (detection.y2 - detection.y1) * margin
    return (
        max(0, int(detection.x1 - grow_x)),
        max(0, int(detection.y1 - grow_y)),
        min(width, round(detection.x2 + grow_x)),
        min(height, round(detection.y2 + grow_y)),
    )


def blur_outside_hazards(frame: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """The frame blurred everywhere except inside its detections' grown boxes (kept pixel for pixel)."""
    small = (max(1, round(frame.width * BLUR_SCALE)), max(1, round(frame.height * BLUR_SCALE)))
    blurred = frame.resize(small, Image.Resampling.BOX).resize(frame.size, Image.Resampling.BILINEAR)
    for detection in detections:
        box = grown_box(detection, frame.size)
        if box[0] < box[2] and box[1] < box[3]:
            blurred.paste(frame.crop(box), box[:2])
    return blurred
