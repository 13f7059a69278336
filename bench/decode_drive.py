"""Decoding and sampling a dashcam drive on the client: a 1280x720 H.264 MP4 (generated road scenes panned frame by
frame, so the decoder has real motion to work on) through `hazard_client.drives`, as `hazard ingest drive.mp4` runs
it, without the server. Speed as a multiple of real time (video seconds per wall second).

    .venv/bin/python -m bench.decode_drive --seconds 20

1. decode only: every frame decoded, none converted (the floor of any sampling);
2. by distance, every 5 m at 15 m/s (3 frames/s converted to JPEG), with a GPX-like track interpolated per frame;
3. by time, --fps 2.
Each on one decoder thread (the issue's goal: >= 4x real time on one core) and with FFmpeg's threads.
Writes bench/results/decode_drive.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from bench.common import road_frame
from hazard_client.drives.drive import DriveOptions, sample_drive
from hazard_client.drives.geo import offset_position
from hazard_client.drives.track import Fix, Track
from hazard_client.drives.video import Decoding, Video

START = 1_772_359_200.0
SPEED_MPS = 15.0
RESULTS = Path(__file__).resolve().parent / "results" / "decode_drive.json"


def write_drive(path: Path, seconds: int, fps: int) -> None:
    """Pans across a strip of generated scenes 6 px a frame, with sensor-like grain (without it the stream is a
    fraction of a dashcam's bitrate and decodes unrealistically fast); libx264 `veryfast` at 8 Mbit/s, 2 s GOP."""
    rng = np.random.default_rng(7)
    scenes = [np.asarray(Image.open(io.BytesIO(road_frame(seed))).convert("RGB")) for seed in range(4, 8)]
    strip = np.concatenate(scenes, axis=1)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
    stream.bit_rate = 8_000_000  # a 720p dashcam's: most of a decoder's work is in the bits
    stream.options = {"preset": "veryfast", "g": str(2 * fps)}
    grain = [rng.normal(0, 8, (720, 1280, 3)).astype(np.int16) for _ in range(15)]
    for number in range(seconds * fps):
        left = (number * 6) % (strip.shape[1] - 1280)
        pixels = np.clip(strip[:, left : left + 1280].astype(np.int16) + grain[number % len(grain)], 0, 255)
        frame = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")
        frame.pts, frame.time_base = number, Fraction(1, fps)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def straight_track(seconds: int) -> Track:
    fixes = []
    for second in range(seconds + 2):
        lat, lon = offset_position(48.137, 11.575, SPEED_MPS * second, 0.0)
        fixes.append(Fix(START + second, lat, lon))
    return Track(fixes, "generated")


def measure(path: Path, threads: int, mode: str, track: Track, spool: Path) -> dict[str, Any]:
    video = Video(path, threads)
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        if mode == "decode only":
            decoding = Decoding()
            for _ in video.frames(decoding):
                pass
            frames, sampled = decoding.frames, 0
        else:
            options = DriveOptions(every_m=5.0) if mode == "every 5 m" else DriveOptions(fps=2.0)
            _, report = sample_drive(video, track, options, spool)
            frames, sampled = report.decoding.frames, report.sampled
        duration = video.info.duration or 0.0
    finally:
        video.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "mode": mode,
        "decoder_threads": threads or "auto",
        "frames_decoded": frames,
        "frames_sampled": sampled,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "x_real_time": round(duration / wall, 2),
        "x_real_time_per_cpu_second": round(duration / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="length of the generated drive (default 20)")
    parser.add_argument("--fps", type=int, default=30, help="its frame rate (default 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drive.mp4"
        write_drive(path, args.seconds, args.fps)
        track = straight_track(args.seconds)
        runs = [
            measure(path, threads, mode, track, Path(folder) / "spool")
            for threads in (1, 0)
            for mode in ("decode only", "every 5 m", "fps 2")
        ]
        size_mb = path.stat().st_size / 1e6
    mbit_s = round(size_mb * 8 / args.seconds, 1)
    result = {
        "video": {
            "size": "1280x720",
            "codec": "h264",
            "seconds": args.seconds,
            "fps": args.fps,
            "mbit_s": mbit_s,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "pyav": av.__version__},
        "runs": runs,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"1280x720 H.264, {args.seconds} s at {args.fps} fps, {mbit_s} Mbit/s")
    for run in runs:
        print(
            f"{run['mode']:<12} threads {run['decoder_threads']!s:<4} {run['frames_sampled']:>4} sampled: "
            f"{run['x_real_time']:>5.1f}x real time ({run['x_real_time_per_cpu_second']:.1f}x per CPU second)"
        )


if __name__ == "__main__":
    main()
