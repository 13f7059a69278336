"""A session's `metadata.camera`: checked at creation with a device profile's ranges, a 422 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from app.services.core.errors import ValidationFailed
from app.services.sessions.metadata import MetadataLimits, validate_metadata

CAMERA = {"height_m": 1.4, "pitch_deg": 5.5, "hfov_deg": 58.0}


def test_a_complete_camera_within_range_is_accepted() -> None:
    validate_metadata({"vehicle": "van-7", "camera": CAMERA}, MetadataLimits())
    validate_metadata({"vehicle": "van-7"}, MetadataLimits())  # and none at all


@pytest.mark.parametrize(
    ("camera", "field"),
    [
        ({k: v for k, v in CAMERA.items() if k != "pitch_deg"}, "metadata.camera.pitch_deg"),
        ({**CAMERA, "height_m": 0.0}, "metadata.camera.height_m"),
        ({**CAMERA, "hfov_deg": 180}, "metadata.camera.hfov_deg"),
        ({**CAMERA, "pitch_deg": True}, "metadata.camera.pitch_deg"),
        ({**CAMERA, "height_m": float("nan")}, "metadata.camera.height_m"),
        ({**CAMERA, "yaw_deg": 2}, "metadata.camera.yaw_deg"),
        ("1.4,5,60", "metadata.camera"),
    ],
)
def test_a_camera_out_of_range_or_incomplete_names_the_field(camera: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        validate_metadata({"camera": camera}, MetadataLimits())
    assert raised.value.status == 422 and raised.value.details["field"] == field
