"""The video's clock against the GPS clock. A frame's GPS time is `intercept + slope * t`, `t` its time in the video
(seconds from the first frame). `--offset` shifts the video's start; `--sync VIDEO_TIME=GPS_TIME` pairs, one or more,
fit the line by least squares (two or more pairs also measure the dashcam clock's drift)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hazard_client.drives.timeparse import epoch_seconds
from hazard_client.ingest import UsageError

_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


@dataclass(frozen=True)
class SyncPoint:
    """`video` is either seconds into the video (`video_is_offset`) or an instant on the dashcam's own clock."""

    video: float
    gps: float
    video_is_offset: bool


@dataclass(frozen=True)
class Clock:
    intercept: float  # GPS time (epoch seconds) of the video's first frame
    slope: float = 1.0  # GPS seconds per video second: 1 + drift

    def gps_time(self, video_seconds: float) -> float:
        return self.intercept + self.slope * video_seconds

    @property
    def drift_ppm(self) -> float:
        return (self.slope - 1.0) * 1e6


def parse_sync(text: str) -> SyncPoint:
    """`12.5=2026-03-01T10:00:12Z`, `1:02.5=...` (minutes:seconds into the video) or `<instant>=<instant>`."""
    video, separator, gps = text.partition("=")
    if not separator or not video.strip() or not gps.strip():
        raise UsageError(f"--sync {text!r}: write VIDEO_TIME=GPS_TIME, e.g. --sync 12.5=2026-03-01T10:00:12Z")
    try:
        gps_time = epoch_seconds(gps)
        matched = _CLOCK.match(video.strip())
        if matched:
            hours, minutes, seconds = matched.groups()
            return SyncPoint(int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), gps_time, True)
        try:
            return SyncPoint(float(video), gps_time, True)
        except ValueError:
            return SyncPoint(epoch_seconds(video), gps_time, False)
    except ValueError as exc:
        raise UsageError(f"--sync {text!r}: {exc}") from None


def fit_clock(video_start: float, offset: float, points: Sequence[SyncPoint]) -> Clock:
    """No pair: the video's start plus `offset`. One pair: the offset it says. Two or more: offset and drift, the
    least-squares line through them (pairs given as dashcam instants count from `video_start`)."""
    if not points:
        return Clock(video_start + offset)
    xs = [point.video if point.video_is_offset else point.video - video_start for point in points]
    ys = [point.gps for point in points]
    if len(points) == 1 or max(xs) - min(xs) < 1e-6:
        return Clock(sum(y - x for x, y in zip(xs, ys, strict=True)) / len(xs))
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    slope = covariance / variance
    if not 0.9 < slope < 1.1:
        raise UsageError(
            f"--sync pairs give a clock running at {slope:.3f}x the GPS clock: check the pairs (VIDEO_TIME=GPS_TIME)"
        )
    return Clock(mean_y - slope * mean_x, slope)
