"""Which calibrations the registry's passes may place detections on the road with: a camera given (the key's
profile, the session's metadata) or an estimate settled on ESTIMATE_SETTLED_TRACKS tracks; not one from fewer."""

from __future__ import annotations

import pytest

from app.services.tracking.positions import ESTIMATED, PROFILE, SESSION, Calibration, Camera
from app.services.tracking.service import ESTIMATE_SETTLED_TRACKS, places_detections

CAMERA = Camera(height_m=1.4, pitch_deg=6.0, hfov_deg=60.0)


@pytest.mark.parametrize(
    ("calibration", "places"),
    [
        (Calibration(CAMERA, PROFILE), True),
        (Calibration(CAMERA, SESSION), True),
        (Calibration(CAMERA, ESTIMATED, ESTIMATE_SETTLED_TRACKS), True),
        (Calibration(CAMERA, ESTIMATED, ESTIMATE_SETTLED_TRACKS - 1), False),
        (Calibration(CAMERA, ESTIMATED, 3), False),
    ],
)
def test_only_a_given_or_settled_camera_places_detections(calibration: Calibration, places: bool) -> None:
    assert places_detections(calibration) is places
