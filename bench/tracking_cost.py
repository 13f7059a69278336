"""What tracking a located drive costs `/detect`: P50 at 5 frames/s of this checkout's server against a baseline
server (an older commit), both on loopback, in one run, sending the same frames alternately.

    # a baseline checkout (the commit before positions: 3ee7c4c) beside this one, each its own server and Redis
    git worktree add /tmp/base 3ee7c4c
    REDIS_URL=redis://127.0.0.1:16401/0 $RATES .venv/bin/python -m app --port 18091 &                       # ours
    (cd /tmp/base && PYTHONPATH=/tmp/base REDIS_URL=redis://127.0.0.1:16402/0 $RATES \\
        /work/main/.venv/bin/python -m app --port 18092 &)                                                 # baseline
    .venv/bin/python -m bench.tracking_cost --url http://127.0.0.1:18091 --base-url http://127.0.0.1:18092

Frames: generated drives (`scripts/scenes.py`, 1280x720, GPS with each vehicle's bias, heading, speed and
`captured_at`) past a road's hazards, `--vehicles` of them one after the other, each its own session on each server
(no camera given: each server places hazards as it can, ours estimating the camera from the session's tracks and
merging into the fleet map). Open loop at `--rate`: frame i is due at start + i / rate at one server and half a
period later at the other, latency from the due time; the servers alternate which goes first per `--repeat`. Each
answer's time outside the model's stages (its wait less its `timings_ms`) is reported too: the two servers' OpenVINO
instances differ by more than tracking costs from run to run (infer's median 5.8-6.4 ms), the rest is the path.
Writes bench/results/tracking_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import machine, percentiles
from bench.http import LeanClient
from bench.load import loopback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from scenes import drive, generate_road

RESULTS = Path(__file__).resolve().parent / "results" / "tracking_cost.json"
EPOCH = 1_780_000_000.0
Frame = tuple[bytes, dict[str, Any]]


def drive_frames(road_seed: int, vehicles: int, limit: int | None = None) -> list[list[Frame]]:
    """Per vehicle, its frames (the first `limit`): JPEG bytes and the query parameters of `/detect`."""
    road = generate_road(road_seed)
    drives = []
    for vehicle in range(vehicles):
        frames = []
        drawn = drive(road, speed_mps=8.0, fps=10.0, seed=road_seed * 100 + vehicle, size=(1280, 720))
        for frame in itertools.islice(drawn, limit):
            buffer = io.BytesIO()
            frame.image.save(buffer, format="JPEG", quality=85)
            captured = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(EPOCH + vehicle * 1000 + frame.seconds))
            params: dict[str, Any] = {"lat": frame.lat, "lon": frame.lon, "heading": frame.heading}
            params |= {
                "speed_mps": frame.speed_mps,
                "captured_at": f"{captured}.{int(frame.seconds * 1000) % 1000:03d}Z",
            }
            frames.append((buffer.getvalue(), params))
        drives.append(frames)
    return drives


async def send_all(
    client: LeanClient, drives: list[list[Frame]], start: float, rate: float
) -> list[tuple[float, float]]:
    """Every drive's frames, open loop from `start`: per answer (all 200, anything else raises), its latency and
    how much of it was spent outside the model's stages (`timings_ms`: decode to postprocess), in ms."""
    latencies: list[tuple[float, float]] = []
    index = 0
    for frames in drives:
        created = await client.post("/sessions")
        session_id = created.json()["session_id"]
        pending = []
        for body, params in frames:
            due = start + index / rate
            index += 1
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            pending.append(asyncio.create_task(_detect(client, f"/detect/{session_id}?{urlencode(params)}", body, due)))
        latencies += await asyncio.gather(*pending)
    return latencies


async def _detect(client: LeanClient, path: str, body: bytes, due: float) -> tuple[float, float]:
    sent = time.perf_counter()
    answer = await client.post(path, body, "image/jpeg")
    answered = time.perf_counter()
    if answer.status != 200:
        raise RuntimeError(f"{path} answered {answer.status}")
    stages = sum(answer.json()["timings_ms"].values())
    return (answered - due) * 1000, (answered - sent) * 1000 - stages


async def run(urls: dict[str, str], drives: list[list[Frame]], rate: float, first: str) -> dict[str, Any]:
    order = [first, *(name for name in urls if name != first)]
    async with LeanClient(urls[order[0]]) as one, LeanClient(urls[order[1]]) as other:
        start = time.perf_counter() + 0.5
        runs = await asyncio.gather(
            send_all(one, drives, start, rate), send_all(other, drives, start + 0.5 / rate, rate)
        )
    report: dict[str, Any] = {}
    for name, answers in zip(order, runs, strict=True):
        report[name] = percentiles([latency for latency, _ in answers])
        report[f"{name}_outside_stages"] = percentiles([outside for _, outside in answers])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:18091", help="this checkout's server")
    parser.add_argument("--base-url", default="http://127.0.0.1:18092", help="the baseline's server")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--road-seed", type=int, default=9301)
    parser.add_argument("--vehicles", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    urls = {"ours": args.url, "base": args.base_url}
    if not all(loopback(url) for url in urls.values()):
        raise SystemExit("load goes to loopback only")
    drives = drive_frames(args.road_seed, args.vehicles)
    runs = []
    for repeat in range(args.repeat):
        result = asyncio.run(run(urls, drives, args.rate, "ours" if repeat % 2 == 0 else "base"))
        result["p50_ours_minus_base_ms"] = round(result["ours"]["p50"] - result["base"]["p50"], 2)
        outside = result["ours_outside_stages"]["p50"] - result["base_outside_stages"]["p50"]
        result["p50_outside_stages_ours_minus_base_ms"] = round(outside, 2)
        print(json.dumps(result), flush=True)
        runs.append(result)
    report = {
        "machine": machine(),
        "rate": args.rate,
        "frames_per_run": sum(len(frames) for frames in drives),
        "road_seed": args.road_seed,
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
