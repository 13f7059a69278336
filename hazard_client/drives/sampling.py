"""Which decoded frames travel: one every `every_m` metres travelled (a car at a red light sends nothing new), or
`fps` frames per video second. Frames without a position (outside the track, or no track) go by time, one a second,
in distance mode: there is no distance to measure."""

from __future__ import annotations

from dataclasses import dataclass

from hazard_client.drives.geo import distance_m
from hazard_client.drives.track import Position

UNLOCATED_PERIOD_S = 1.0


@dataclass
class TimeSampler:
    period: float
    _next: float | None = None

    def take(self, t: float) -> bool:
        if self._next is not None and t + 1e-6 < self._next:
            return False
        # Catch up over a gap without a burst: the next one is a period after this one, on the period's grid.
        start = t if self._next is None else self._next
        steps = max(1, int((t - start) // self.period) + 1)
        self._next = start + steps * self.period
        return True


class Sampler:
    """`take(t, position)`: does the frame at `t` (seconds into the video), at `position`, travel?"""

    def __init__(self, every_m: float | None, fps: float | None) -> None:
        if (every_m is None) == (fps is None):
            raise ValueError("sample by distance (every_m) or by time (fps), one of them")
        self.every_m = every_m
        self._by_time = TimeSampler(1 / fps) if fps is not None else None
        self._unlocated = TimeSampler(UNLOCATED_PERIOD_S)
        self._previous: Position | None = None
        self._travelled = 0.0

    @property
    def description(self) -> str:
        if self._by_time is not None:
            return f"{1 / self._by_time.period:g} frames per second"
        return f"every {self.every_m:g} m travelled (frames without a position: one a second)"

    def take(self, t: float, position: Position | None) -> bool:
        if self._by_time is not None:
            return self._by_time.take(t)
        if position is None:
            self._previous = None
            return self._unlocated.take(t)
        previous, self._previous = self._previous, position
        if previous is None:
            self._travelled = 0.0
            return True
        self._travelled += distance_m(previous.lat, previous.lon, position.lat, position.lon)
        assert self.every_m is not None
        if self._travelled + 1e-9 < self.every_m:
            return False
        self._travelled = (
            max(0.0, self._travelled - self.every_m) % self.every_m
        )  # the metres past the mark count toward the next: 5 m apart on average
        return True
