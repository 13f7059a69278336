"""A generated drive (`scenes.drive`) as a dashcam and its GPS logger record it: an H.264 MP4 on the camera's clock
(its `creation_time`) and a GPX track on GPS time, `offset_s` later (GPS time = camera time + offset_s), a fix a
second. The drive's GPS is exact (no bias, no noise), so each frame's true place and time are known: the yardstick
for `hazard ingest drive.mp4 --track drive.gpx --offset offset_s` (tests/system/test_cli_drives.py,
bench/drive_ingest.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import gpxpy.gpx
from scenes import SCENE_SIZE, Road, drive


@dataclass(frozen=True)
class ExactFix:
    """Where and when the frame at `video_time` seconds into the video was taken, on GPS time."""

    video_time: float
    gps_time: float
    lat: float
    lon: float
    heading: float
    speed_mps: float


def render_drive(
    video: Path,
    track: Path,
    road: Road,
    *,
    speed_mps: float,
    fps: int,
    start: float,
    offset_s: float,
    size: tuple[int, int] = SCENE_SIZE,
    bit_rate: int | None = None,
    start_m: float = 0.0,
) -> list[ExactFix]:
    """Writes `video` (libx264, a keyframe a second; `bit_rate` or libx264's default quality) of the drive from
    `start_m` along the road, and `track`; answers each frame's exact fix."""
    container = av.open(str(video), "w", options={"movflags": "+faststart"})
    container.metadata["creation_time"] = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stream = container.add_stream("libx264", rate=fps)
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"preset": "veryfast", "g": str(fps)}
    if bit_rate is not None:
        stream.bit_rate = bit_rate
    fixes = []
    frames = drive(
        road, speed_mps=speed_mps, fps=fps, seed=road.seed, gps_bias_m=0.0, gps_noise_m=0.0, size=size, start_m=start_m
    )
    for frame in frames:
        picture = av.VideoFrame.from_image(frame.image)  # type: ignore[no-untyped-call]
        picture.pts, picture.time_base = frame.index, Fraction(1, fps)
        for packet in stream.encode(picture):
            container.mux(packet)
        gps_time = start + offset_s + frame.seconds
        fixes.append(ExactFix(frame.seconds, gps_time, frame.lat, frame.lon, frame.heading, frame.speed_mps))
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    write_track(track, road, (start_m, speed_mps), start + offset_s, seconds=math.ceil(fixes[-1].video_time) + 1)
    return fixes


def write_track(path: Path, road: Road, motion: tuple[float, float], gps_start: float, seconds: int) -> None:
    """A fix a second from one second before the drive's first frame to `seconds` after it (GPX, gpxpy); `motion`:
    where along the road the drive starts (m) and its speed (m/s)."""
    start_m, speed_mps = motion
    gpx = gpxpy.gpx.GPX()
    segment = gpxpy.gpx.GPXTrackSegment()
    gpx.tracks.append(gpxpy.gpx.GPXTrack())
    gpx.tracks[0].segments.append(segment)
    for second in range(-1, seconds + 1):
        lat, lon = road.position(start_m + speed_mps * second)
        moment = datetime.fromtimestamp(gps_start + second, UTC)
        segment.points.append(gpxpy.gpx.GPXTrackPoint(lat, lon, time=moment))
    path.write_text(gpx.to_xml(), encoding="utf-8")
