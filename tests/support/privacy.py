"""How a test tells a blurred region from a sharp one, and a sharp region from its original."""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


def pixels(image: Image.Image, box: Box) -> np.ndarray:
    return np.asarray(image.convert("L").crop(box), dtype=np.float64)


def high_frequency_energy(image: Image.Image, box: Box) -> float:
    """Mean absolute difference between neighbouring pixels: texture and edges score high, a blur scores low."""
    region = pixels(image, box)
    return float(np.abs(np.diff(region, axis=0)).mean() + np.abs(np.diff(region, axis=1)).mean())


def mean_difference(first: Image.Image, second: Image.Image, box: Box) -> float:
    return float(np.abs(pixels(first, box) - pixels(second, box)).mean())


def shrunk(box: Box, by: int) -> Box:
    """The box with `by` pixels off each side: away from the box outline drawn on an annotated frame."""
    return (box[0] + by, box[1] + by, box[2] - by, box[3] - by)


def outside_regions(size: tuple[int, int], boxes: list[Box]) -> list[Box]:
    """Full-width bands above and below all the boxes, each at least 32 px high: wholly outside every box."""
    width, height = size
    top = min(box[1] for box in boxes)
    bottom = max(box[3] for box in boxes)
    bands = [(0, 0, width, top), (0, bottom, width, height)]
    return [band for band in bands if band[3] - band[1] >= 32]
