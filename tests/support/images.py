"""Encoded test images made on the fly from the seeded scene generator."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scenes import Scene, generate_scene


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def scene(seed: int, size: tuple[int, int] = (640, 360)) -> Scene:
    return generate_scene(np.random.default_rng(seed), size)


def scene_with_hazards(seed: int = 1, size: tuple[int, int] = (1280, 720)) -> tuple[Scene, bytes]:
    """The first scene from `seed` on that has at least one hazard, as a JPEG."""
    rng = np.random.default_rng(seed)
    while True:
        candidate = generate_scene(rng, size)
        if candidate.hazards:
            return candidate, encode(candidate.image, quality=90)
