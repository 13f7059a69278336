"""A drive sampled end to end (no server): frames placed by the track through the clock, within a metre of where
they were taken; frames outside the track sent without location and counted; no track, one a second."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from hazard_client.drives.clock import parse_sync
from hazard_client.drives.drive import DriveOptions, DriveReport, drive_lines, sample_drive, track_beside
from hazard_client.drives.geo import distance_m
from hazard_client.drives.readers import read_track
from hazard_client.drives.video import Video
from hazard_client.ingest import SourceFile
from tests.support.drives import START, Route, write_gpx, write_video

CLOCK_OFFSET = 7.25  # the dashcam's clock is this far behind GPS time


def sampled(
    path: Path, track_path: Path | None, options: DriveOptions, spool: Path
) -> tuple[list[SourceFile], DriveReport]:
    video = Video(path)
    try:
        return sample_drive(video, read_track(track_path) if track_path else None, options, spool)
    finally:
        video.close()


def seconds(source: SourceFile) -> float:
    assert source.video_time is not None
    return source.video_time


@pytest.fixture
def drive(tmp_path: Path) -> tuple[Path, Route]:
    route = Route(speed_mps=12.0, start=START + CLOCK_OFFSET, seconds=6.0)
    write_gpx(tmp_path / "drive.gpx", route, every=1.0)
    return write_video(tmp_path / "drive.mp4", seconds=4, fps=10, creation_time=START), route


def test_with_the_offset_every_frame_is_within_a_metre_of_where_it_was_taken(
    drive: tuple[Path, Route], tmp_path: Path
) -> None:
    video, route = drive
    assert track_beside(video) == tmp_path / "drive.gpx"
    files, report = sampled(
        video, tmp_path / "drive.gpx", DriveOptions(every_m=5.0, offset=CLOCK_OFFSET), tmp_path / "spool"
    )
    assert report.located == report.sampled == len(files) >= 9  # 48 m at one frame per 5 m (10 fps: 1.2 m steps)
    for source in files:
        meta = source.meta
        assert meta is not None and meta.lat is not None and meta.lon is not None and meta.captured_at is not None
        exact = route.at(START + CLOCK_OFFSET + seconds(source))
        assert distance_m(meta.lat, meta.lon, *exact) < 1.0
        assert meta.captured_at.timestamp() == pytest.approx(START + CLOCK_OFFSET + seconds(source))
        assert meta.heading == pytest.approx(route.heading, abs=0.1) and meta.speed_mps == pytest.approx(12.0, rel=0.01)
        assert source.path.read_bytes()[:3] == b"\xff\xd8\xff"
    gaps = [seconds(b) - seconds(a) for a, b in itertools.pairwise(files)]
    assert all(0.4 - 1e-6 <= gap <= 0.5 + 1e-6 for gap in gaps)  # 5 m at 12 m/s, on a 0.1 s frame grid
    assert "start from the video's creation_time metadata" in drive_lines(report)[0]


def test_sync_pairs_place_frames_like_the_offset(drive: tuple[Path, Route], tmp_path: Path) -> None:
    video, route = drive
    options = DriveOptions(
        fps=2.0, sync=(parse_sync(f"0={START + CLOCK_OFFSET}"), parse_sync(f"3={START + CLOCK_OFFSET + 3}"))
    )
    files, report = sampled(video, tmp_path / "drive.gpx", options, tmp_path / "spool")
    assert [seconds(source) for source in files] == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5])
    for source in files:
        assert source.meta is not None and source.meta.lat is not None and source.meta.lon is not None
        assert distance_m(source.meta.lat, source.meta.lon, *route.at(START + CLOCK_OFFSET + seconds(source))) < 1.0
    assert report.start_from == "--sync"


def test_frames_outside_the_track_go_without_location_and_are_counted(
    drive: tuple[Path, Route], tmp_path: Path
) -> None:
    video, _ = drive
    files, report = sampled(
        video, tmp_path / "drive.gpx", DriveOptions(fps=2.0, offset=CLOCK_OFFSET + 4.0), tmp_path / "spool"
    )
    unlocated = [source for source in files if source.meta is None or source.meta.lat is None]
    assert len(unlocated) == report.outside_track == report.unlocated == 3  # video seconds 2.5, 3, 3.5: past the track
    assert "3 outside the track's time" in drive_lines(report)[-1]


def test_without_a_track_frames_go_one_a_second_without_location(drive: tuple[Path, Route], tmp_path: Path) -> None:
    video, _ = drive
    files, report = sampled(video, None, DriveOptions(), tmp_path / "spool")
    assert len(files) == 4 and report.located == 0 and report.outside_track == 0
    assert all(source.meta is not None and source.meta.captured_at is not None for source in files)
