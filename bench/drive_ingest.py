"""End-to-end frames/s of a drive ingested from its video vs the same frames from a folder (the issue's goal: within
10 %), on loopback against a real API with its embedded worker (`make run`'s layout; a private redis-server).

    .venv/bin/python -m bench.drive_ingest --seconds 30 --fps 10 --repeat 2

1. A generated drive (`scripts/drive_video.py`: `scenes.drive` past hazards, 1280x720, 8 Mbit/s H.264) rendered to
   drive.mp4 on the camera's clock and drive.gpx on GPS time, OFFSET_S later.
2. Per sampling (every frame: `--fps` the video's rate; and `--every-m` at the command's default), the frames
   `hazard ingest drive.mp4` sends, extracted with the command's own sampling to a folder of JPEGs (the same bytes).
3. `hazard ingest drive.mp4 --offset OFFSET_S ...` (decoding and sampling a few frames ahead of the uploads) and
   `hazard ingest FOLDER`, each as its own process, alternately `--repeat` times against one API whose result cache
   forgets within a second (every run's frames are inferred: `cached` is checked to be 0). End to end = frames /
   the command's wall time (start to exit: decoding, hashing, uploads, processing, results file).
   `--pin`: Redis and the API on the first CPU, the command on the second (a laptop and a server, each its own CPU);
   without it all share every CPU.
Writes bench/results/drive_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ingest import run_ingest
from bench.jobs import Stack, redis_server
from hazard_client.drives.command import DEFAULT_EVERY_M
from hazard_client.drives.drive import DriveOptions, sample_drive
from hazard_client.drives.readers import read_track
from hazard_client.drives.video import Video

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from drive_video import render_drive
from scenes import generate_road

START = 1_772_359_200.0  # the camera's clock at the first frame
OFFSET_S = 2.5  # GPS time = camera time + OFFSET_S
SPEED_MPS = 15.0
SIZE = (1280, 720)
RESULTS = Path(__file__).resolve().parent / "results" / "drive_ingest.json"


def extract(video_path: Path, track_path: Path, options: DriveOptions, folder: Path) -> int:
    """The frames the command sends for `options`, as JPEG files in `folder` (the same bytes)."""
    video = Video(video_path)
    try:
        files, _ = sample_drive(video, read_track(track_path), options, folder.with_name(folder.name + ".spool"))
    finally:
        video.close()
    folder.mkdir()
    for number, source in enumerate(files):
        shutil.move(source.path, folder / f"frame{number:05d}.jpg")
    return len(files)


def measure(video: Path, folder: Path, sampling: list[str], repeat: int, workdir: Path, pin: bool) -> dict[str, Any]:
    """With `pin`, Redis and the API (started from here, so they inherit it) on the first CPU, the command on the
    second: as a field laptop and a server each have their own."""
    runs: dict[str, list[dict[str, Any]]] = {"video": [], "folder": []}
    cpus = sorted(os.sched_getaffinity(0))
    if pin:
        os.sched_setaffinity(0, cpus[:1])
    with redis_server() as redis_url:
        stack = Stack(redis_url, workdir)
        try:
            url = stack.api(RESULT_CACHE_TTL_SECONDS="1")
            if pin:
                os.sched_setaffinity(0, cpus[1:2])
            for number in range(repeat):
                out = workdir / f"video-{number}.jsonl"
                runs["video"].append(run_ingest(url, video, out, 2, "--offset", str(OFFSET_S), *sampling))
                runs["folder"].append(run_ingest(url, folder, workdir / f"folder-{number}.jsonl", 2))
        finally:
            stack.stop()
            os.sched_setaffinity(0, cpus)
    result: dict[str, Any] = {"sampling": " ".join(sampling), "pinned": pin}
    for source, measured in runs.items():
        assert len({run["frames"] for run in measured}) == 1, measured
        result[source] = {
            "frames": measured[0]["frames"],
            "end_to_end_fps": [run["end_to_end_fps"] for run in measured],
            "end_to_end_fps_median": round(statistics.median(run["end_to_end_fps"] for run in measured), 1),
            "job_fps": [run["job_fps"] for run in measured],
            "client_cpu_seconds": [run["client_cpu_seconds"] for run in measured],
            "summary": measured[-1]["summary"],
        }
    assert result["video"]["frames"] == result["folder"]["frames"], "the video and the folder sent other frames"
    result["video_vs_folder"] = round(
        result["video"]["end_to_end_fps_median"] / result["folder"]["end_to_end_fps_median"], 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="length of the drive (default 30)")
    parser.add_argument("--fps", type=int, default=10, help="the video's frame rate (default 10)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternately (default 2)")
    parser.add_argument("--pin", action="store_true", help="the server on the first CPU, the command on the second")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs two CPUs")
    if shutil.which("redis-server") is None:
        parser.error("redis-server is needed (make test installs it)")
    road = generate_road(11, length_m=SPEED_MPS * args.seconds, hazards=int(args.seconds), neighbours=0.1)
    report: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "video": {"size": "x".join(map(str, SIZE)), "fps": args.fps, "seconds": args.seconds, "mbit_s": 8},
        "speed_mps": SPEED_MPS,
        "hazards_on_the_road": len(road.hazards),
        "samplings": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        video, track = work / "drive.mp4", work / "drive.gpx"
        render_drive(
            video, track, road, speed_mps=SPEED_MPS, fps=args.fps, start=START, offset_s=OFFSET_S, size=SIZE,
            bit_rate=8_000_000,
        )  # fmt: skip
        samplings = {
            f"fps{args.fps}": (["--fps", str(args.fps)], DriveOptions(fps=float(args.fps), offset=OFFSET_S)),
            f"every{DEFAULT_EVERY_M:g}m": (  # the command's default
                ["--every-m", f"{DEFAULT_EVERY_M:g}"],
                DriveOptions(every_m=DEFAULT_EVERY_M, offset=OFFSET_S),
            ),
        }
        for name, (sampling, options) in samplings.items():
            folder = work / name
            extract(video, track, options, folder)
            (work / f"{name}-runs").mkdir()
            result = measure(video, folder, sampling, args.repeat, work / f"{name}-runs", args.pin)
            report["samplings"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for result in report["samplings"]:
        video_fps, folder_fps = result["video"]["end_to_end_fps_median"], result["folder"]["end_to_end_fps_median"]
        print(
            f"{result['sampling']:<12} {result['video']['frames']:>4} frames: video {video_fps} frames/s, "
            f"folder {folder_fps} frames/s, video/folder {result['video_vs_folder']}"
        )


if __name__ == "__main__":
    main()
