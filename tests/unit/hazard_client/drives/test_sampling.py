"""Frames travel every few metres (none while the car waits) or at a frame rate; without a position, one a second."""

from __future__ import annotations

from hazard_client.drives.geo import offset_position
from hazard_client.drives.sampling import Sampler
from hazard_client.drives.track import Position


def at(t: float, north_m: float) -> Position:
    lat, lon = offset_position(48.0, 11.0, north_m, 0.0)
    return Position(t, lat, lon, 0.0, None)


def test_distance_sampling_sends_one_frame_every_so_many_metres() -> None:
    sampler = Sampler(every_m=5.0, fps=None)
    taken = [t / 10 for t in range(100) if sampler.take(t / 10, at(t / 10, t * 1.0))]  # 10 m/s, 10 fps
    assert taken == [t / 10 for t in range(0, 100, 5)]


def test_a_car_waiting_at_a_red_light_sends_nothing_new() -> None:
    sampler = Sampler(every_m=5.0, fps=None)
    assert sampler.take(0.0, at(0.0, 0.0))
    assert not any(sampler.take(t / 10, at(t / 10, 1.0)) for t in range(1, 600))  # a minute standing


def test_frames_without_position_go_one_a_second() -> None:
    sampler = Sampler(every_m=5.0, fps=None)
    assert sum(sampler.take(t / 25, None) for t in range(250)) == 10


def test_time_sampling_keeps_the_rate_without_bursts_after_a_gap() -> None:
    sampler = Sampler(every_m=None, fps=2.0)
    times = [t / 30 for t in range(90)] + [10 + t / 30 for t in range(30)]
    taken = [t for t in times if sampler.take(t, None)]
    assert len(taken) == 6 + 2 and taken[6] == 10
