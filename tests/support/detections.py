"""Comparing detections across answers that carry different extras."""

from __future__ import annotations

from typing import Any

BOX_FIELDS = ("label", "class_id", "confidence", "box")


def boxes(detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the model found, without what a session adds to it (tracking's hazard ids)."""
    return [{field: d[field] for field in BOX_FIELDS} for d in detections]
