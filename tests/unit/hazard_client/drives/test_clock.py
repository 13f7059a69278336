"""The video's clock on the GPS clock: an offset, or a least-squares line through --sync pairs (offset and drift)."""

from __future__ import annotations

import pytest

from hazard_client.drives.clock import SyncPoint, fit_clock, parse_sync
from hazard_client.ingest import UsageError
from tests.support.drives import START


def test_without_pairs_the_start_plus_offset() -> None:
    clock = fit_clock(START, -2.5, [])
    assert clock.gps_time(10.0) == START + 7.5 and clock.slope == 1.0


def test_one_pair_gives_the_offset() -> None:
    clock = fit_clock(0.0, 0.0, [parse_sync("12.5=2026-03-01T10:00:12Z")])
    assert clock.gps_time(12.5) == pytest.approx(START + 12) and clock.slope == 1.0


def test_pairs_fit_offset_and_drift_by_least_squares() -> None:
    slope, intercept = 1.0002, START + 3.0  # a dashcam clock 200 ppm slow, 3 s behind
    points = [SyncPoint(t, intercept + slope * t + noise, True) for t, noise in ((0, 0.01), (600, -0.02), (1200, 0.01))]
    clock = fit_clock(0.0, 0.0, points)
    assert clock.slope == pytest.approx(slope, abs=2e-5) and clock.drift_ppm == pytest.approx(200, abs=20)
    assert clock.gps_time(900) == pytest.approx(intercept + slope * 900, abs=0.02)


def test_pairs_written_as_dashcam_instants_count_from_the_video_start() -> None:
    point = parse_sync("2026-03-01T09:59:58Z=2026-03-01T10:00:00Z")
    assert not point.video_is_offset
    assert fit_clock(START - 10, 0.0, [point]).gps_time(8.0) == pytest.approx(START)


def test_video_times_as_minutes_and_seconds() -> None:
    assert parse_sync("1:02.5=1772359200").video == 62.5
    assert parse_sync("1:00:00=1772359200").video == 3600


@pytest.mark.parametrize("text", ["12.5", "=2026-03-01T10:00:00Z", "12=soon"])
def test_a_malformed_pair_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--sync"):
        parse_sync(text)


def test_pairs_that_make_no_clock_are_refused() -> None:
    with pytest.raises(UsageError, match="check the pairs"):
        fit_clock(0.0, 0.0, [SyncPoint(0, START, True), SyncPoint(10, START + 100, True)])
