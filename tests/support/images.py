"""Encoded test images made on the fly from the seeded scene generator."""

from __future__ import annotations

import io
import struct
import zlib

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


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas: the classic decompression bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
