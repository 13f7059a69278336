"""Limits on a session's client metadata, checked before anything is written: a session that is stored must be
one the API can read back and answer (nesting a JSON encoder or the response serialiser cannot handle, strings
that are not Unicode, or blobs that bloat every session read are refused up front)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.services.core.errors import ValidationFailed
from app.services.identity.device_profile import HEIGHT_M, HFOV_DEG, PITCH_DEG
from app.services.identity.limits import checked_number

# `metadata.camera`, what projects the session's boxes onto the road: the ranges of a key's device profile.
CAMERA_FIELDS = {"height_m": HEIGHT_M, "pitch_deg": PITCH_DEG, "hfov_deg": HFOV_DEG}


@dataclass(frozen=True)
class MetadataLimits:
    max_bytes: int = 4096  # of its JSON (UTF-8, compact)
    max_depth: int = 8  # the metadata object itself is level 1
    max_keys: int = 64  # keys of every object in it, nested ones included


def _refuse(message: str, limit: str, maximum: int, **found: Any) -> ValidationFailed:
    return ValidationFailed(message, details={"field": "metadata", "limit": limit, "max": maximum, **found})


def _check_string(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(
            "metadata strings must be valid Unicode (no lone surrogates).",
            details={"field": "metadata", "limit": "unicode"},
        ) from None


def validate_camera(camera: object) -> None:
    """`metadata.camera`, when given: an object with all three fields, each within a device profile's range; a
    422 names the field (`metadata.camera.height_m`)."""
    if not isinstance(camera, dict):
        raise ValidationFailed("metadata.camera must be an object.", details={"field": "metadata.camera"})
    unknown = sorted(set(camera) - set(CAMERA_FIELDS))
    if unknown:
        raise ValidationFailed(
            f"Unknown fields in metadata.camera: {', '.join(unknown)}.",
            details={"field": f"metadata.camera.{unknown[0]}", "fields": unknown},
        )
    for field, (low, high) in CAMERA_FIELDS.items():
        if field not in camera:
            raise ValidationFailed(
                f"metadata.camera needs {field} (and {', '.join(f for f in CAMERA_FIELDS if f != field)}).",
                details={"field": f"metadata.camera.{field}"},
            )
        checked_number(camera[field], f"metadata.camera.{field}", low, high)


def validate_metadata(metadata: dict[str, Any], limits: MetadataLimits) -> None:
    """Raise ValidationFailed naming the first limit `metadata` exceeds, or the first field of its `camera` that is
    missing or out of range. Iterative: no depth can recurse here."""
    if "camera" in metadata:
        validate_camera(metadata["camera"])
    keys = 0
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > limits.max_depth:
            raise _refuse(
                f"metadata is nested deeper than SESSION_METADATA_MAX_DEPTH ({limits.max_depth}).",
                "SESSION_METADATA_MAX_DEPTH",
                limits.max_depth,
            )
        if isinstance(value, dict):
            keys += len(value)
            if keys > limits.max_keys:
                raise _refuse(
                    f"metadata has more than SESSION_METADATA_MAX_KEYS ({limits.max_keys}) keys in all.",
                    "SESSION_METADATA_MAX_KEYS",
                    limits.max_keys,
                )
            for key, item in value.items():
                _check_string(str(key))
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_string(value)
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limits.max_bytes:
        raise _refuse(
            f"metadata is larger than SESSION_METADATA_MAX_BYTES ({limits.max_bytes}) as JSON.",
            "SESSION_METADATA_MAX_BYTES",
            limits.max_bytes,
            bytes=size,
        )
