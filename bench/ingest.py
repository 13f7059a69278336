"""`hazard ingest` throughput on generated 1280x720 frames, measured in one run on loopback (a private
redis-server per layout, so no result cache carries over, and real processes).

    .venv/bin/python -m bench.ingest --frames 500

1. The full engine's saturation (decode + infer + NMS, in process, the served LATENCY config): the yardstick.
2. `hazard ingest DIR` (the command line, as its own process) against
   (a) `make run`'s layout: one API whose embedded worker works the batch frames, and
   (b) an API with EMBEDDED_WORKER=false and one `hazard-worker` process.
   Per layout: frames/s end to end (the command's wall time: hashing, uploads, processing, results file) and
   frames/s of the job (created to its last frame done, by the server's timestamps), each as a
   fraction of the engine's saturation.
Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import road_frame
from bench.jobs import ROOT, Stack, distinct_frames, engine_saturation, redis_server


def write_folder(frames: list[bytes], folder: Path) -> None:
    folder.mkdir(parents=True)
    for number, frame in enumerate(frames):
        folder.joinpath(f"frame{number:05d}.jpg").write_bytes(frame)


def run_ingest(url: str, folder: Path, out: Path, concurrency: int, *extra: str) -> dict[str, Any]:
    """`hazard ingest FOLDER` (or a video, with `extra` options) as its own process, timed from start to exit."""
    command = [sys.executable, "-m", "hazard_client", "ingest", str(folder), "--server", url, "--out", str(out)]
    command += ["--concurrency", str(concurrency), "--progress-every", "10", *extra]
    started, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"hazard ingest exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    job_id = result.stdout.split("job: ", 1)[1].split()[0]
    job = httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()
    frames = int(job["total"])
    assert job["status"] == "completed" and job["done"] == frames and job["cached"] == 0, job
    job_seconds = _seconds(job["updated_at"]) - _seconds(job["created_at"])
    return {
        "frames": frames,
        "wall_seconds": round(wall, 2),
        "end_to_end_fps": round(frames / wall, 1),
        "job_fps": round(frames / job_seconds, 1),
        "client_cpu_seconds": round(cpu, 2),  # the command's own CPU: hashing, decoding, JPEG, HTTP
        "summary": result.stdout.strip().splitlines(),
    }


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (the servers are not: they still run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def measure(layout: str, frames_dir: Path, concurrency: int) -> dict[str, Any]:
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as workdir:
        stack = Stack(redis_url, Path(workdir))
        try:
            if layout == "embedded":
                url = stack.api()  # make run's layout: one process, embedded worker
            else:
                url = stack.api(EMBEDDED_WORKER="false")
                stack.worker()
            return run_ingest(url, frames_dir, Path(workdir) / "results.jsonl", concurrency)
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20, help="length of the engine saturation measurement")
    parser.add_argument("--concurrency", type=int, default=2, help="`hazard ingest --concurrency`")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.json"))
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is needed (make test installs it)")
    report: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "frames": args.frames,
        "concurrency": args.concurrency,
    }
    saturation = asyncio.run(engine_saturation(road_frame(), args.seconds, "LATENCY"))
    report["engine_saturation_fps"] = round(saturation, 1)
    with tempfile.TemporaryDirectory() as scratch:
        frames_dir = Path(scratch) / "frames"
        write_folder(distinct_frames(args.frames), frames_dir)
        for layout in ("embedded", "worker"):
            result = measure(layout, frames_dir, args.concurrency)
            result["end_to_end_vs_engine"] = round(result["end_to_end_fps"] / saturation, 3)
            result["job_vs_engine"] = round(result["job_fps"] / saturation, 3)
            report[layout] = result
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
