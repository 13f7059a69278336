"""What a located frame tells the pass watcher about its detections: with the session's camera, where each box
touches the road (its bottom centre projected, as the hazard's position is); without one, nothing on the ground."""

from __future__ import annotations

import pytest

from app.services.registry.feed import on_ground
from app.services.tracking.positions import Camera, ground_offset
from app.services.tracking.types import FrameInput, Observation

CAMERA = Camera(height_m=1.4, pitch_deg=8.0, hfov_deg=70.0)


def frame(*boxes: tuple[float, float, float, float], width: int | None = 1280) -> FrameInput:
    observations = tuple(Observation("pothole", 0, 0.8, box, f"c{i}") for i, box in enumerate(boxes))
    return FrameInput("r1", 0.0, observations, 52.5, 13.4, width=width, height=None if width is None else 720)


def test_each_detection_is_placed_where_its_box_touches_the_road() -> None:
    near_right, beyond_horizon = (800.0, 600.0, 900.0, 650.0), (600.0, 100.0, 700.0, 150.0)
    placed = on_ground(frame(near_right, beyond_horizon), CAMERA)
    assert placed is not None and len(placed) == 1  # a box above the horizon touches no road
    label, ahead, right = placed[0]
    assert label == "pothole" and (ahead, right) == pytest.approx(ground_offset(850.0, 650.0, 1280, 720, CAMERA))
    assert 0 < ahead < 15 and right > 0


@pytest.mark.parametrize(("camera", "width"), [(None, 1280), (CAMERA, None)])
def test_without_a_camera_or_the_frames_size_nothing_is_placed(camera: Camera | None, width: int | None) -> None:
    assert on_ground(frame((800.0, 600.0, 900.0, 650.0), width=width), camera) is None
