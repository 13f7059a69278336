"""Batch jobs and the queue, measured in one run on loopback (a private redis-server, real processes).

    .venv/bin/python -m bench.jobs --frames 300 --seconds 20

1. The full engine's saturation (decode + infer + NMS, in process; the API's LATENCY config and the worker's
   THROUGHPUT config, the better one counts) vs one `hazard-worker` working a batch job of distinct 1280x720
   frames: frames/s from the first frame taken to the job's completion.
2. Live `/detect` at 50 % of that saturation, open loop, on `make run`'s layout (one API, embedded worker):
   alone, then with a batch job keeping the rest of the engine busy; P95 ratio.
3. Live `/detect` at a low rate on a local-mode API vs a remote-mode API (no model) + one worker: the queue's
   added latency.
Writes bench/results/jobs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from bench.common import MODEL_DIR, machine, road_frame
from bench.engine import saturated_throughput
from bench.load import run_load

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {within} s")


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", data],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != b"PONG\n":
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


class Stack:
    """Processes of one fleet: APIs and workers, started with the project's own launchers."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "FLEET_NAME": f"bench-{uuid.uuid4().hex[:8]}",
            "LOG_LEVEL": "WARNING",
            "MODEL_CACHE_DIR": str(workdir / "model-cache"),
        }
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def _start(self, command: list[str], name: str, **env: str) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        extra = {"SPOOL_DIR": str(self.workdir / name / "spool"), "STORAGE_DIR": str(self.workdir / name / "media")}
        self.processes.append(
            subprocess.Popen(command, cwd=ROOT, env={**self.env, **extra, **env}, stdout=log, stderr=log)
        )

    def api(self, **env: str) -> str:
        port = free_port()
        self._start([sys.executable, "-m", "app", "--port", str(port)], f"api-{port}", **env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready")
        return url

    def worker(self) -> None:
        port = free_port()
        self._start([sys.executable, "-m", "app.entrypoints.worker"], f"worker-{port}", WORKER_METRICS_PORT=str(port))
        deadline = time.monotonic() + 90
        while "hazard_model_ready 1.0" not in _metrics(port):
            assert time.monotonic() < deadline, "worker not ready"
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(60)


def _metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return ""


def submit_job(url: str, frames: list[bytes]) -> str:
    with httpx.Client(base_url=url, timeout=60) as client:
        job_id: str = client.post("/jobs", json={"name": "bench"}).raise_for_status().json()["job_id"]
        for start in range(0, len(frames), CHUNK):
            parts = [
                ("file", (f"{start + i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames[start : start + CHUNK])
            ]
            client.post(f"/jobs/{job_id}/frames", files=parts).raise_for_status()
        client.post(f"/jobs/{job_id}/close").raise_for_status()
    return job_id


def fill_backlog(url: str, frames: list[bytes], total: int) -> None:
    """Queue `total` batch frames: jobs of `frames`, each with its own confidence so the result cache never
    answers them; backpressure (429) is waited out as a client should."""
    with httpx.Client(base_url=url, timeout=60) as client:
        for number in itertools.count():
            options = {"conf": round(0.25 + number * 1e-4, 4)}
            job = client.post("/jobs", json={"name": "backlog", "options": options}).raise_for_status().json()
            for start in range(0, len(frames), CHUNK):
                chunk = enumerate(frames[start : start + CHUNK], start)
                parts = [("file", (f"{i}.jpg", f, "image/jpeg")) for i, f in chunk]
                while (answer := client.post(f"/jobs/{job['job_id']}/frames", files=parts)).status_code == 429:
                    time.sleep(float(answer.headers.get("retry-after", 1)))
                answer.raise_for_status()
                total -= len(parts)
                if total <= 0:
                    return


def job_rate(url: str, job_id: str, total: int) -> float:
    """Frames/s from the first frame done to the last (polled; excludes the upload of the frames)."""
    first_at: float | None = None
    first_done = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            job = client.get(f"/jobs/{job_id}").json()
            finished = int(job["done"]) + int(job["failed"])
            if first_at is None and finished > 0:
                first_at, first_done = time.monotonic(), finished
            if job["status"] in ("completed", "failed"):
                assert job["done"] == total, job
                assert first_at is not None
                return (total - first_done) / (time.monotonic() - first_at)
            time.sleep(0.05)


async def engine_saturation(frame: bytes, seconds: float, hint: str) -> float:
    model = load_model(MODEL_DIR, performance_hint=hint)
    engine = DetectionEngine(model, model.optimal_requests, 256, 40_000_000)
    await engine.warm_up(10)
    return await saturated_throughput(engine, frame, seconds, 4 * engine.pool.size)


def distinct_frames(count: int) -> list[bytes]:
    return [road_frame(seed) for seed in range(100, 100 + count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--low-rate", type=float, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/jobs.json"))
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is needed (make test installs it)")
    frame = road_frame()
    started = time.perf_counter()
    for _ in range(200):
        hashlib.sha256(frame).digest()
    report: dict[str, Any] = {
        **machine(),
        "frame_bytes": len(frame),
        "sha256_ms": round((time.perf_counter() - started) / 200 * 1000, 4),
    }
    # The API's config (LATENCY: sets the live half load) and the worker's (THROUGHPUT: what one worker is held to).
    report["engine_saturation_fps"] = round(asyncio.run(engine_saturation(frame, args.seconds, "LATENCY")), 1)
    throughput = asyncio.run(engine_saturation(frame, args.seconds, "THROUGHPUT"))
    report["engine_saturation_throughput_hint_fps"] = round(throughput, 1)
    frames = distinct_frames(args.frames)
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as workdir:
        stack = Stack(redis_url, Path(workdir))
        try:
            api = stack.api(EMBEDDED_WORKER="false")
            stack.worker()
            job_id = submit_job(api, frames)
            report["worker_batch_fps"] = round(job_rate(api, job_id, len(frames)), 1)
            best = max(report["engine_saturation_fps"], report["engine_saturation_throughput_hint_fps"])
            report["worker_vs_engine"] = round(report["worker_batch_fps"] / best, 3)
            # Remote vs local at a low rate: the same worker serves the remote API's live frames.
            remote = stack.api(INFERENCE_MODE="remote")
            report["remote_low_rate"] = asyncio.run(run_load(remote, args.low_rate, args.seconds, frame))
            report["local_low_rate"] = asyncio.run(run_load(api, args.low_rate, args.seconds, frame))
        finally:
            stack.stop()
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as workdir:
        stack = Stack(redis_url, Path(workdir))
        try:
            api = stack.api()  # make run's layout: one process, embedded worker
            half = report["engine_saturation_fps"] / 2
            report["live_half_load_alone"] = asyncio.run(run_load(api, half, args.seconds, frame))
            # The backlog is queued before the live load starts (uploading frames costs the API's CPU too, which
            # is not what this measures): enough to keep the engine's spare half busy through the run.
            fill_backlog(api, frames, int(half * args.seconds * 1.2))
            report["live_half_load_with_batch"] = asyncio.run(run_load(api, half, args.seconds, frame))
            with httpx.Client(base_url=api) as client:
                report["batch_frames_done_meanwhile"] = sum(job["done"] for job in client.get("/jobs").json()["items"])
        finally:
            stack.stop()
    p95 = report["live_half_load_with_batch"]["latency_ms"]["p95"] / report["live_half_load_alone"]["latency_ms"]["p95"]
    report["live_p95_with_batch_vs_alone"] = round(p95, 3)
    remote_p50 = report["remote_low_rate"]["latency_ms"]["p50"] - report["local_low_rate"]["latency_ms"]["p50"]
    report["remote_added_p50_ms"] = round(remote_p50, 2)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
