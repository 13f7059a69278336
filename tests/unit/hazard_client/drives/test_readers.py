"""GPX, NMEA 0183 and CSV tracks as field teams' loggers write them, and the one-line errors of unreadable ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazard_client.drives.geo import distance_m
from hazard_client.drives.readers import TrackUnreadable, read_track
from tests.support.drives import START, Route, nmea_sentence, write_csv, write_gpx, write_nmea


@pytest.mark.parametrize("write", [write_gpx, write_nmea, write_csv], ids=["gpx", "nmea", "csv"])
def test_each_format_gives_the_route(write: object, tmp_path: Path) -> None:
    route = Route()
    suffix = {"write_gpx": ".gpx", "write_nmea": ".nmea", "write_csv": ".csv"}[write.__name__]  # type: ignore[attr-defined]
    track = read_track(write(tmp_path / f"drive{suffix}", route))  # type: ignore[operator]
    assert len(track) == len(route.fix_times()) and track.start == START
    position = track.at(START + 2.5)
    assert position is not None and distance_m(position.lat, position.lon, *route.at(START + 2.5)) < 0.5


def test_nmea_rmc_speed_and_course_are_kept(tmp_path: Path) -> None:
    route = Route(heading=200.0, speed_mps=15.0)
    position = read_track(write_nmea(tmp_path / "drive.log", route)).at(START + 1)
    assert position is not None and position.heading == pytest.approx(200.0)
    assert position.speed_mps == pytest.approx(15.0, abs=0.05)  # knots with one decimal


def test_csv_takes_epoch_seconds_and_optional_heading_and_speed(tmp_path: Path) -> None:
    route = Route()
    track = read_track(write_csv(tmp_path / "epoch.csv", route, epoch=True))
    assert track.start == START
    path = tmp_path / "full.csv"
    path.write_text(
        "time,lat,lon,heading,speed\n2026-03-01T10:00:00Z,1.0,2.0,90,3.5\n2026-03-01T10:00:01Z,1,2.00003,,\n"
    )
    first = read_track(path).at(START)
    assert first is not None and first.heading == 90 and first.speed_mps == 3.5


def test_a_torn_last_nmea_line_is_ignored(tmp_path: Path) -> None:
    path = write_nmea(tmp_path / "drive.nmea", Route())
    path.write_text(path.read_text() + "$GPRMC,100005.00,A,4808.")
    assert len(read_track(path)) == len(Route().fix_times())


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("bad.csv", "time,lat,lon\n2026-03-01T10:00:00Z,1,2\nyesterday,1,2\n", 3),
        ("bad.csv", "when,where\n1,2\n", 1),
        ("bad.csv", "time,lat,lon\n2026-03-01T10:00:00Z,95,2\n", 2),
        ("bad.nmea", "$GPGGA,100000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\n" + nmea_sentence("GPZDA"), 1),
        (
            "bad.gpx",
            '<?xml version="1.0"?>\n<gpx version="1.1">\n<trk><trkseg>\n<trkpt lat="1" lon="2"></trkpt>\n',
            None,
        ),
        ("bad.gpx", '<gpx version="1.1"><trk><trkseg>\n\n<trkpt lat="1" lon="2"></trkpt></trkseg></trk></gpx>', 3),
    ],
    ids=["csv-time", "csv-header", "csv-range", "nmea-checksum", "gpx-syntax", "gpx-no-time"],
)
def test_an_unreadable_track_names_the_file_and_line(tmp_path: Path, name: str, text: str, line: int | None) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TrackUnreadable) as raised:
        read_track(path)
    assert str(path) in raised.value.message
    if line is not None:
        assert raised.value.line == line and f"line {line}:" in raised.value.message


def test_a_track_without_fixes_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("time,lat,lon\n")
    with pytest.raises(TrackUnreadable, match="no GPS fix"):
        read_track(path)
