"""A GPS track: fixes sorted by time, and where the vehicle was at any instant between them."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from hazard_client.drives.geo import bearing_deg, distance_m

# Below this the course between two fixes is GPS noise (a car at a red light), not a direction.
MIN_COURSE_M = 0.5


@dataclass(frozen=True)
class Fix:
    """One GPS fix: `t` in seconds since the Unix epoch (UTC); heading (degrees from true north) and speed (m/s) as
    the receiver reported them, None where it did not."""

    t: float
    lat: float
    lon: float
    heading: float | None = None
    speed_mps: float | None = None


@dataclass(frozen=True)
class Position:
    t: float
    lat: float
    lon: float
    heading: float | None
    speed_mps: float | None


class Track:
    """Fixes sorted by time (fixes at the same instant: the first is kept). `at(t)` interpolates linearly between
    the two fixes around `t`; outside the track's time span it answers None (no position is better than a guess)."""

    def __init__(self, fixes: Iterable[Fix], source: str = "") -> None:
        unique: dict[float, Fix] = {}
        for fix in fixes:
            unique.setdefault(fix.t, fix)
        self.fixes = sorted(unique.values(), key=lambda fix: fix.t)
        self.times = [fix.t for fix in self.fixes]
        self.source = source

    def __len__(self) -> int:
        return len(self.fixes)

    @property
    def start(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def end(self) -> float | None:
        return self.times[-1] if self.times else None

    def covers(self, t: float) -> bool:
        return bool(self.times) and self.times[0] <= t <= self.times[-1]

    def at(self, t: float) -> Position | None:
        if not self.covers(t):
            return None
        right = bisect.bisect_left(self.times, t)
        if self.times[right] == t or right == 0:
            a = b = self.fixes[right]
            segment = right if right + 1 < len(self.fixes) else right - 1
        else:
            a, b = self.fixes[right - 1], self.fixes[right]
            segment = right - 1
        share = 0.0 if b.t == a.t else (t - a.t) / (b.t - a.t)
        lat = a.lat + (b.lat - a.lat) * share
        lon = a.lon + (b.lon - a.lon) * share
        return Position(t, lat, lon, self._heading(a, b, share, segment), self._speed(a, b, share, segment))

    def _heading(self, a: Fix, b: Fix, share: float, segment: int) -> float | None:
        if a.heading is not None and b.heading is not None:
            turn = (b.heading - a.heading + 180.0) % 360.0 - 180.0  # the short way round: 350 -> 10 passes 0
            return (a.heading + turn * share) % 360.0
        if a.heading is not None or b.heading is not None:
            return a.heading if a.heading is not None else b.heading
        return self._course(segment)

    def _course(self, segment: int) -> float | None:
        """The course over this segment, or over the nearest one before it where the vehicle moved (stopped, a
        car still faces where it was going)."""
        for index in range(min(segment, len(self.fixes) - 2), -1, -1):
            a, b = self.fixes[index], self.fixes[index + 1]
            if distance_m(a.lat, a.lon, b.lat, b.lon) >= MIN_COURSE_M:
                return bearing_deg(a.lat, a.lon, b.lat, b.lon)
        for index in range(segment + 1, len(self.fixes) - 1):
            a, b = self.fixes[index], self.fixes[index + 1]
            if distance_m(a.lat, a.lon, b.lat, b.lon) >= MIN_COURSE_M:
                return bearing_deg(a.lat, a.lon, b.lat, b.lon)
        return None

    def _speed(self, a: Fix, b: Fix, share: float, segment: int) -> float | None:
        if a.speed_mps is not None and b.speed_mps is not None:
            return a.speed_mps + (b.speed_mps - a.speed_mps) * share
        if len(self.fixes) < 2:
            return a.speed_mps
        first, second = self.fixes[segment], self.fixes[segment + 1]
        return distance_m(first.lat, first.lon, second.lat, second.lon) / (second.t - first.t)
