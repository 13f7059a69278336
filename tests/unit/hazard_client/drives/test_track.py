"""A track answers where the vehicle was at any instant: interpolated between fixes, course and speed derived where
the receiver reported none, nothing outside its time span."""

from __future__ import annotations

import pytest

from hazard_client.drives.geo import distance_m
from hazard_client.drives.track import Fix, Track
from tests.support.drives import START, Route


def route_track(route: Route, every: float = 1.0) -> Track:
    return Track(Fix(t, *route.at(t)) for t in route.fix_times(every))


def test_position_between_fixes_is_interpolated_not_the_nearest_fix() -> None:
    route = Route(speed_mps=20.0)
    track = route_track(route, every=2.0)
    for share in (0.1, 0.5, 0.9):
        t = START + 2.0 + 2.0 * share
        position = track.at(t)
        assert position is not None
        assert distance_m(position.lat, position.lon, *route.at(t)) < 0.05


def test_heading_and_speed_come_from_the_course_between_fixes_when_the_track_has_none() -> None:
    route = Route(heading=135.0, speed_mps=12.5)
    position = route_track(route).at(START + 1.25)
    assert position is not None and position.heading is not None and position.speed_mps is not None
    assert position.heading == pytest.approx(135.0, abs=0.01)
    assert position.speed_mps == pytest.approx(12.5, rel=1e-3)


def test_reported_heading_turns_the_short_way_round_north() -> None:
    track = Track([Fix(0, 0.0, 0.0, heading=350.0, speed_mps=5), Fix(1, 0.0001, 0.0, heading=10.0, speed_mps=7)])
    position = track.at(0.5)
    assert position is not None and position.heading == pytest.approx(0.0) and position.speed_mps == 6


def test_a_stopped_vehicle_keeps_the_heading_it_drove_on() -> None:
    fixes = [Fix(0, 0.0, 0.0), Fix(1, 0.0, 0.0001), Fix(2, 0.0, 0.0001), Fix(3, 0.0, 0.0001)]
    position = Track(fixes).at(2.5)
    assert position is not None and position.heading == pytest.approx(90.0) and position.speed_mps == 0


def test_outside_the_track_there_is_no_position() -> None:
    track = route_track(Route())
    assert track.at(START - 0.01) is None and track.at(START + 4.01) is None
    assert track.at(START) is not None and track.at(START + 4.0) is not None


def test_fixes_are_sorted_by_time_and_duplicates_dropped() -> None:
    track = Track([Fix(2, 0.0, 0.2), Fix(0, 0.0, 0.0), Fix(1, 0.0, 0.1), Fix(1, 5.0, 5.0)])
    assert track.times == [0, 1, 2] and track.fixes[1].lat == 0.0
