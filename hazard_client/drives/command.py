"""`hazard ingest drive.mp4 --track drive.gpx` and `hazard ingest DRIVES/`: one job per video, named after it."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from hazard_client.ahead import Ahead
from hazard_client.cli import FRAMES_FAILED, OK, ingest_settings, run_ingestion
from hazard_client.drives.clock import parse_sync
from hazard_client.drives.drive import (
    DriveOptions,
    DriveReport,
    damage_line,
    drive_lines,
    drive_report,
    sampled_frames,
    track_beside,
)
from hazard_client.drives.readers import read_track
from hazard_client.drives.timeparse import epoch_seconds
from hazard_client.drives.track import Track
from hazard_client.drives.video import VIDEO_SUFFIXES, DecodeFailed, Video
from hazard_client.errors import HazardError
from hazard_client.feed import Feed
from hazard_client.ingest import Settings, Summary, UsageError, summary_lines

# A hazard is in a dashcam's view for some 10-15 m of the approach, and the job's tracker confirms it after
# TRACK_MIN_HITS (5) frames that saw it: one frame every 2 m gives it 5-7. Every 5 m gave 2-3, and a drive sampled so
# found no hazard at all (only detections).
DEFAULT_EVERY_M = 2.0
FRAMES_AHEAD = 4  # sampled frames decoded ahead of the uploads, at most (each a JPEG in the spool)


@dataclass(frozen=True)
class Drive:
    video: Path
    track_path: Path | None
    out: Path


def find_videos(folder: Path, pattern: str) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and path.relative_to(folder).match(pattern)
    )


def drive_options(args: argparse.Namespace) -> DriveOptions:
    for name, value in (("--every-m", args.every_m), ("--fps", args.fps)):
        if value is not None and value <= 0:
            raise UsageError(f"{name} {value}: give a positive number")
    try:
        start = epoch_seconds(args.start) if args.start else None
    except ValueError as exc:
        raise UsageError(f"--start: {exc}") from None
    return DriveOptions(
        every_m=args.every_m or DEFAULT_EVERY_M,
        fps=args.fps,
        offset=args.offset or 0.0,
        sync=tuple(parse_sync(text) for text in args.sync or ()),
        start=start,
    )


def plan_drives(args: argparse.Namespace, path: Path) -> list[Drive]:
    """Every video with its track and results file; refused here (exit 2), before anything is sent."""
    if path.is_file():
        out = Path(args.out) if args.out else Path(f"{path.stem}-results.jsonl")
        track = Path(args.track) if args.track else track_beside(path)
        return [Drive(path, track, out)]
    if args.track:
        raise UsageError(f"--track names one video's track; in {path} each video's track is found by its name")
    if args.geojson:
        raise UsageError("--geojson PATH is for one video; for a folder, pass --geojson alone (beside each result)")
    results = Path(args.out) if args.out else Path(f"{path.resolve().name}-results")
    if results.suffix.lower() in (".jsonl", ".csv"):
        raise UsageError(f"--out {results}: for a folder of drives, name a folder (one results file per drive)")
    results.mkdir(parents=True, exist_ok=True)
    return [
        Drive(video, track_beside(video), results / f"{video.stem}-results.jsonl")
        for video in find_videos(path, args.pattern)
    ]


def check_inputs(drives: list[Drive]) -> dict[Path, Track]:
    """Open every video and read every track once: a bad file stops the run before any job is made."""
    tracks: dict[Path, Track] = {}
    for drive in drives:
        Video(drive.video).close()
        if drive.track_path is not None:
            if not drive.track_path.is_file():
                raise UsageError(f"{drive.track_path}: no such track file")
            tracks[drive.track_path] = read_track(drive.track_path)
    return tracks


def ingest_drives(args: argparse.Namespace, path: Path) -> int:
    options = drive_options(args)
    drives = plan_drives(args, path)
    tracks = check_inputs(drives)
    say = Console(stderr=True, soft_wrap=True, highlight=False)
    code = OK
    for number, drive in enumerate(drives, 1):
        track = tracks.get(drive.track_path) if drive.track_path is not None else None
        settings = ingest_settings(
            args,
            drive.video,
            drive.out,
            args.name or drive.video.name,
            {**options.identity(), "track": str(drive.track_path)},
        )
        settings.out_format  # noqa: B018 - refuses a name that is neither .jsonl nor .csv, before any work
        say.print(f"drive {number} of {len(drives)}: {drive.video} (decoding and sampling)", markup=False)
        report, summary = ingest_drive(args, settings, drive, track, options)
        for line in drive_lines(report) + (summary_lines(summary)[1:] if summary.files else ["nothing to send"]):
            print(line)
        if (damage := damage_line(report)) is not None:
            say.print(damage, markup=False)
            code = FRAMES_FAILED
        if summary.failed:
            code = FRAMES_FAILED
    if len(drives) > 1:
        print(f"drives: {len(drives)}")
    return code


def ingest_drive(
    args: argparse.Namespace, settings: Settings, drive: Drive, track: Track | None, options: DriveOptions
) -> tuple[DriveReport, Summary]:
    """One drive through one job, its frames decoded and sampled on a thread a few frames ahead of the uploads."""
    video = Video(drive.video, options.threads)
    spool = drive.out.with_name(f".{drive.out.name}.frames")
    report = drive_report(video, track, options)

    def failed(error: Exception) -> Exception:
        if isinstance(error, HazardError):
            return error
        reason = " ".join(str(error).split()) or type(error).__name__
        return DecodeFailed(f"{drive.video}: decoding stopped after {report.decoding.last_time:.2f} s ({reason})")

    ahead = Ahead(lambda: sampled_frames(video, track, options, report, spool), FRAMES_AHEAD, failed)
    try:
        intro = [f"ingest: frames of {drive.video} as they are decoded; results to {drive.out}"]
        summary = run_ingestion(args, settings, Feed(ahead=ahead), 0, intro)
    finally:
        ahead.close()  # its thread stopped before the video it reads is closed
        video.close()
    shutil.rmtree(spool, ignore_errors=True)  # finished: the next run samples the video anew
    return report, summary
