"""One drive: a video and its track turned into the frames that travel, each with where and when it was taken."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hazard_client.drives.clock import Clock, SyncPoint, fit_clock
from hazard_client.drives.readers import TRACK_SUFFIXES
from hazard_client.drives.sampling import Sampler
from hazard_client.drives.track import Position, Track
from hazard_client.drives.video import Decoding, Video, jpeg
from hazard_client.ingest import SourceFile
from hazard_client.models import FrameMeta

MAX_SPEED_MPS = 150.0  # the API's bound; a GPS jump is not a speed


@dataclass(frozen=True)
class DriveOptions:
    every_m: float = 5.0
    fps: float | None = None  # set: by time, and every_m is not used
    offset: float = 0.0  # GPS time = video time + offset
    sync: tuple[SyncPoint, ...] = ()
    start: float | None = None  # --start: the video's first frame on its own clock (epoch seconds)
    threads: int = 0  # decoder threads (0: FFmpeg's choice)

    def identity(self) -> dict[str, object]:
        """What decides which frames travel and where they are: a resumed run must have the same."""
        return {
            "every_m": None if self.fps is not None else self.every_m,
            "fps": self.fps,
            "offset": self.offset,
            "sync": [[point.video, point.gps, point.video_is_offset] for point in self.sync],
            "start": self.start,
        }


@dataclass
class DriveReport:
    video: Path
    track: Track | None
    start_from: str  # where the video's start time came from, said in the summary
    clock: Clock | None
    sampling: str
    decoding: Decoding = field(default_factory=Decoding)
    sampled: int = 0
    located: int = 0
    outside_track: int = 0  # sent without a location: the track does not cover their time

    @property
    def unlocated(self) -> int:
        return self.sampled - self.located


def track_beside(video: Path) -> Path | None:
    """drive1.mp4 -> drive1.gpx, .nmea, .log or .csv beside it (the first that exists, in that order)."""
    for suffix in TRACK_SUFFIXES:
        for candidate in (video.with_suffix(suffix), video.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def file_sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def video_clock(video: Video, track: Track | None, options: DriveOptions) -> tuple[Clock | None, str]:
    """The video's clock on the GPS clock, and where its start came from."""
    if options.sync and all(point.video_is_offset for point in options.sync):
        return fit_clock(0.0, 0.0, options.sync), "--sync"
    if options.start is not None:
        start, source = options.start, "--start"
    elif video.info.creation_time is not None:
        start, source = video.info.creation_time, "the video's creation_time metadata"
    elif track is not None and track.start is not None:
        start, source = track.start, "the track's first fix (the video has no creation_time)"
    else:
        return None, "unknown (no creation_time, no --start, no track): frames carry no time"
    return fit_clock(start, options.offset, options.sync), source


def drive_report(video: Video, track: Track | None, options: DriveOptions) -> DriveReport:
    """The drive's report before its first frame: clock, where its start came from, how it is sampled."""
    clock, start_from = video_clock(video, track, options)
    return DriveReport(video.path, track, start_from, clock, _sampler(options).description)


def sampled_frames(
    video: Video, track: Track | None, options: DriveOptions, report: DriveReport, spool: Path
) -> Iterator[SourceFile]:
    """Decode the whole video and yield the sampled frames, each a JPEG in `spool` with its place and time, as they
    come (a drive's frames upload while the rest decode); `report` counts them and records damage."""
    clock, sampler = report.clock, _sampler(options)
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir(parents=True)
    digest = file_sha256(video.path)
    for t, frame in video.frames(report.decoding):
        gps_time = clock.gps_time(t) if clock is not None else None
        position = track.at(gps_time) if track is not None and gps_time is not None else None
        if not sampler.take(t, position):
            continue  # never converted: only sampled frames cost a colour conversion and a JPEG
        name = f"{video.path.name}@{t:010.3f}s.jpg"
        path = spool / name
        path.write_bytes(jpeg(frame))
        report.sampled += 1
        report.located += position is not None
        report.outside_track += track is not None and position is None and gps_time is not None
        yield SourceFile(path, name, digest, path.stat().st_size, frame_meta(gps_time, position), t)


def sample_drive(
    video: Video, track: Track | None, options: DriveOptions, spool: Path
) -> tuple[list[SourceFile], DriveReport]:
    """Every sampled frame of the drive at once (the bench and tests; the command streams `sampled_frames`)."""
    report = drive_report(video, track, options)
    return list(sampled_frames(video, track, options, report, spool)), report


def _sampler(options: DriveOptions) -> Sampler:
    return Sampler(None if options.fps is not None else options.every_m, options.fps)


def frame_meta(gps_time: float | None, position: Position | None) -> FrameMeta:
    captured_at = datetime.fromtimestamp(gps_time, UTC) if gps_time is not None else None
    if position is None:
        return FrameMeta(captured_at=captured_at)
    speed = position.speed_mps if position.speed_mps is not None and position.speed_mps <= MAX_SPEED_MPS else None
    heading = position.heading % 360 if position.heading is not None else None
    return FrameMeta(captured_at=captured_at, lat=position.lat, lon=position.lon, heading=heading, speed_mps=speed)


def drive_lines(report: DriveReport) -> list[str]:
    """The drive's part of the summary."""
    track = f"track {report.track.source} ({len(report.track)} fixes)" if report.track else "no track"
    lines = [f"drive {report.video.name}: {track}; start from {report.start_from}"]
    if report.clock is not None and report.clock.slope != 1.0:
        lines.append(f"clock: drift {report.clock.drift_ppm:+.0f} ppm from --sync")
    decoded = report.decoding
    lines.append(
        f"sampled {report.sampled} of {decoded.frames} decoded frames ({report.sampling}); "
        f"located {report.located}, without location {report.unlocated}"
        + (f" ({report.outside_track} outside the track's time)" if report.outside_track else "")
    )
    return lines


def damage_line(report: DriveReport) -> str | None:
    decoded = report.decoding
    if decoded.damage is None:
        return None
    return (
        f"warning: {report.video} is damaged ({decoded.damage}): the {report.sampled} frames sampled before it were "
        "sent, the rest of the video could not be read"
    )
