"""Projection of a box's bottom onto the road, fusion of a track's views, and calibration estimated from tracks."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from app.services.tracking.hazard_map import distance_m
from app.services.tracking.matcher import Tracker
from app.services.tracking.positions import (
    CAMERA_GPS,
    ESTIMATED,
    METRES_PER_DEGREE,
    PROFILE,
    Calibration,
    Camera,
    PositionParams,
    estimate_camera,
    fuse,
    ground_offset,
    locate,
    moved,
)
from app.services.tracking.types import FrameInput, Observation, Sighting, Track, TrackParams

CAMERA = Camera(height_m=1.4, pitch_deg=5.0, hfov_deg=60.0)
WIDTH, HEIGHT = 640, 360
ORIGIN = (52.0, 13.0)
HEADING = 30.0
PARAMS = PositionParams(gps_sigma_m=1.5, assumed_hfov_deg=60.0)


def image_point(camera: Camera, ahead: float, right: float) -> tuple[float, float]:
    """A pinhole camera's pixel of a ground point (written apart from the module's inverse, on purpose)."""
    f = (WIDTH / 2) / math.tan(math.radians(camera.hfov_deg) / 2)
    pitch = math.radians(camera.pitch_deg)
    depth = ahead * math.cos(pitch) + camera.height_m * math.sin(pitch)
    below = camera.height_m * math.cos(pitch) - ahead * math.sin(pitch)
    return WIDTH / 2 + f * right / depth, HEIGHT / 2 + f * below / depth


def approach(
    hazard_ahead: float, right: float, *, speed: float = 8.0, fps: float = 15.0, frames: int = 12, heading: bool = True
) -> list[Sighting]:
    """A camera driving from the origin along HEADING towards a ground point `hazard_ahead` metres on."""
    sightings = []
    for i in range(frames):
        travelled = i * speed / fps
        lat, lon = moved(*ORIGIN, HEADING, travelled, 0.0)
        u, v = image_point(CAMERA, hazard_ahead - travelled, right)
        hd = HEADING if heading else None
        sightings.append(Sighting(1000 + i / fps, round(u, 2), round(v, 2), WIDTH, HEIGHT, lat, lon, hd, speed))
    return sightings


def test_a_ground_point_projects_back_to_where_it_lies() -> None:
    for ahead, right in [(4.5, -1.2), (9.0, 0.0), (14.0, 1.5), (30.0, -3.0)]:
        offset = ground_offset(*image_point(CAMERA, ahead, right), WIDTH, HEIGHT, CAMERA)
        assert offset == pytest.approx((ahead, right), abs=1e-9)


def test_a_point_at_or_above_the_horizon_has_no_ground_position() -> None:
    horizon = HEIGHT / 2 - (WIDTH / 2) / math.tan(math.radians(30)) * math.tan(math.radians(CAMERA.pitch_deg))
    assert ground_offset(WIDTH / 2, horizon - 5, WIDTH, HEIGHT, CAMERA) is None
    assert ground_offset(WIDTH / 2, horizon + 0.01, WIDTH, HEIGHT, CAMERA) is None  # beyond MAX_AHEAD_M


def test_a_track_s_views_fuse_to_the_hazard_s_position() -> None:
    truth = moved(*ORIGIN, HEADING, 20.0, 1.0)
    position = fuse(approach(20.0, 1.0), Calibration(CAMERA, PROFILE), PARAMS)
    assert position is not None and position.method == PROFILE
    assert distance_m(position.lat, position.lon, *truth) < 0.05
    assert 1.5 < position.uncertainty_m < 2.0  # the GPS bias dominates what is left


def test_near_views_weigh_more_and_a_view_far_from_the_rest_is_dropped() -> None:
    truth = moved(*ORIGIN, HEADING, 20.0, 1.0)
    views = approach(20.0, 1.0)
    far = views[0]
    views[0] = Sighting(far.at, far.u, far.v - 12, far.width, far.height, far.lat, far.lon, far.heading, far.speed_mps)
    near = views[-1]  # two pixels off at ~5 m is a few centimetres; off by as much at ~14 m, much more
    views[-1] = Sighting(near.at, near.u, near.v + 2, near.width, near.height, near.lat, near.lon, near.heading, 8.0)
    position = fuse(views, Calibration(CAMERA, PROFILE), PARAMS)
    assert position is not None
    assert distance_m(position.lat, position.lon, *truth) < 0.15


def framed(sighting: Sighting, box_px: float) -> Sighting:
    """The view as a detector boxes it: `box_px` wide around its point, cut by the image's edges (the box's bottom
    centre is then the visible part's)."""
    left, right = max(sighting.u - box_px / 2, 0.0), min(sighting.u + box_px / 2, float(WIDTH))
    return replace(sighting, u=(left + right) / 2, v=min(sighting.v, float(HEIGHT)), box_width=right - left)


def test_views_the_frame_cuts_place_nothing_while_whole_ones_exist() -> None:
    """Driving past a hazard 1.5 m to the right, the nearest views' boxes run off the right edge (and their bottoms
    off the last row): their bottom centres are pulled towards the middle, and they weigh most."""
    truth = moved(*ORIGIN, HEADING, 20.0, 1.5)
    views = [framed(s, 60.0) for s in approach(20.0, 1.5, frames=36)]
    cut = [s for s in views if s.u + s.box_width / 2 >= WIDTH - 2 or s.v >= HEIGHT - 2]  # type: ignore[operator]
    assert 3 <= len(cut) < len(views)
    position = fuse(views, Calibration(CAMERA, PROFILE), PARAMS)
    assert position is not None and distance_m(position.lat, position.lon, *truth) < 0.01  # the cut ones: 0.13 m
    only_cut = fuse(cut, Calibration(CAMERA, PROFILE), PARAMS)  # all cut: used, for want of better
    assert only_cut is not None and distance_m(only_cut.lat, only_cut.lon, *truth) > 0.3


def test_without_a_heading_the_course_between_the_track_s_fixes_is_used() -> None:
    truth = moved(*ORIGIN, HEADING, 20.0, 1.0)
    position = fuse(approach(20.0, 1.0, heading=False), Calibration(CAMERA, PROFILE), PARAMS)
    assert position is not None and distance_m(position.lat, position.lon, *truth) < 0.05


def test_without_a_heading_and_with_one_fix_the_camera_gps_is_the_fallback() -> None:
    (view,) = approach(20.0, 1.0, frames=1, heading=False)
    track = Track("h", "pothole", 0, (0, 0, 1, 1), 1000, 1000, 1, 0.9, "r", 1000, view.lat, view.lon, "m")
    track.sightings = [view]
    position = locate(track, Calibration(CAMERA, PROFILE), PARAMS)
    assert position is not None and position.method == CAMERA_GPS
    assert (position.lat, position.lon) == (view.lat, view.lon)


def test_the_horizon_and_focal_height_are_estimated_from_a_few_tracks() -> None:
    tracks = [approach(d, r) for d, r in [(14.0, -1.0), (13.0, 0.5), (14.5, 1.4), (12.0, -0.3)]]
    camera = estimate_camera(tracks, PARAMS)
    assert camera is not None
    assert camera.pitch_deg == pytest.approx(CAMERA.pitch_deg, abs=0.3)
    assert camera.height_m == pytest.approx(CAMERA.height_m, rel=0.03)
    position = fuse(approach(20.0, 1.0), Calibration(camera, ESTIMATED), PARAMS)
    assert position is not None
    assert distance_m(position.lat, position.lon, *moved(*ORIGIN, HEADING, 20.0, 1.0)) < 0.3


def test_views_the_frame_cuts_feed_no_estimate() -> None:
    """Tracks followed until their points leave the bottom of the image: those last rows are the image's edge, not
    the ground point's, and would bend the fit of row against travel."""
    tracks = [[framed(s, 40.0) for s in approach(d, r, frames=26)] for d, r in [(14.0, -1.0), (13.0, 0.5), (14.5, 1.4)]]
    assert all(any(s.v >= HEIGHT - 2 for s in track) for track in tracks)
    camera = estimate_camera(tracks, PARAMS)
    assert camera is not None
    assert camera.pitch_deg == pytest.approx(CAMERA.pitch_deg, abs=0.3)
    assert camera.height_m == pytest.approx(CAMERA.height_m, rel=0.03)


def test_too_few_tracks_estimate_nothing() -> None:
    assert estimate_camera([approach(14.0, 0.0), approach(13.0, 1.0)], PARAMS) is None
    assert estimate_camera([approach(14.0, 0.0, frames=3)] * 3, PARAMS) is None


def frames_of(views: list[Sighting]) -> list[FrameInput]:
    return [
        FrameInput(
            f"r{i}",
            round(v.at, 3),
            (Observation("pothole", 0, 0.9, (v.u - 20, v.v - 10, v.u + 20, v.v), f"c{i}"),),
            v.lat,
            v.lon,
            heading=v.heading,
            speed_mps=v.speed_mps,
            width=WIDTH,
            height=HEIGHT,
        )
        for i, v in enumerate(views)
    ]


def test_frames_out_of_time_order_give_the_same_positions_as_in_order() -> None:
    frames = frames_of(approach(20.0, 1.0, frames=20))
    shuffled = frames[:]
    rng = random.Random(3)
    for start in range(0, len(shuffled), 3):  # concurrent requests finishing in any order, a few at a time
        window = shuffled[start : start + 3]
        rng.shuffle(window)
        shuffled[start : start + 3] = window
    assert shuffled != frames
    in_order = Tracker(TrackParams(min_hits=3), Calibration(CAMERA, PROFILE))
    out_of_order = Tracker(TrackParams(min_hits=3), Calibration(CAMERA, PROFILE))
    for frame in frames:
        in_order.update(frame)
    for frame in shuffled:
        out_of_order.update(frame)
    (a,), (b,) = in_order.hazards(), out_of_order.hazards()
    assert (a.lat, a.lon, a.position_uncertainty_m) == (b.lat, b.lon, b.position_uncertainty_m)
    assert a.position_method == PROFILE


def test_metres_per_degree_is_redis_sphere_s() -> None:
    lat, lon = ORIGIN
    assert distance_m(lat, lon, lat + 1 / METRES_PER_DEGREE, lon) == pytest.approx(1.0, rel=1e-6)
