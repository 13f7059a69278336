"""Privacy of stored frames: `hazards_only` blurs everything outside the hazards' grown boxes and keeps the
hazards themselves as they were."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.services.inference.types import Detection
from app.services.uploads.annotate import annotate
from app.services.uploads.privacy import UploadPrivacy, blur_outside_hazards, grown_box
from tests.support.images import encode
from tests.support.privacy import high_frequency_energy, mean_difference, outside_regions, shrunk

SIZE = (640, 360)
POTHOLE = Detection("pothole", 0, 0.9, 200.0, 150.0, 300.0, 230.0)


def noisy_frame(seed: int = 7) -> Image.Image:
    """Texture everywhere (like faces, plates, foliage): what a blur visibly removes."""
    noise = np.random.default_rng(seed).integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)
    return Image.fromarray(noise, "RGB")


def test_grown_box_adds_a_margin_on_each_side_and_stays_inside_the_frame() -> None:
    assert grown_box(POTHOLE, SIZE) == (185, 138, 315, 242)
    corner = Detection("pothole", 0, 0.9, 0.0, 0.0, 100.0, 100.0)
    assert grown_box(corner, SIZE) == (0, 0, 115, 115)


def test_blur_keeps_grown_boxes_pixel_for_pixel_and_blurs_the_rest() -> None:
    frame = noisy_frame()

    blurred = blur_outside_hazards(frame, [POTHOLE])

    box = grown_box(POTHOLE, SIZE)
    assert mean_difference(blurred, frame, box) == 0
    for region in outside_regions(SIZE, [box]):
        assert high_frequency_energy(blurred, region) < high_frequency_energy(frame, region) / 5


def test_annotate_hazards_only_blurs_outside_the_boxes_and_keeps_the_hazards() -> None:
    frame = noisy_frame()
    jpeg = encode(frame, quality=95)

    full = Image.open(io.BytesIO(annotate(jpeg, [POTHOLE], UploadPrivacy.FULL)))
    private = Image.open(io.BytesIO(annotate(jpeg, [POTHOLE], UploadPrivacy.HAZARDS_ONLY)))

    assert private.size == full.size == SIZE
    box = grown_box(POTHOLE, SIZE)
    # Inside the box (past the drawn outline and JPEG's block edges) the frame is the one stored with `full`.
    assert mean_difference(private, full, shrunk(box, 24)) < 1.0
    for region in outside_regions(SIZE, [box]):
        assert high_frequency_energy(private, region) < high_frequency_energy(full, region) / 5


def test_full_privacy_keeps_the_whole_frame() -> None:
    frame = noisy_frame()
    stored = Image.open(io.BytesIO(annotate(encode(frame, quality=95), [POTHOLE])))

    for region in outside_regions(SIZE, [grown_box(POTHOLE, SIZE)]):
        assert high_frequency_energy(stored, region) > high_frequency_energy(frame, region) / 2
