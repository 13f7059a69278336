"""Open-loop load generator: a fixed arrival rate of real 1280x720 JPEG frames against a running server.

    make run &   # or any running server
    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --rate 40 --seconds 30

Arrivals are scheduled at fixed intervals whatever the answers do, and latency counts from the
scheduled send time, so a slow server shows up as queueing instead of hiding it (no coordinated
omission). Only loopback targets are allowed. Prints achieved rate, P50/P95/P99/max and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

from bench.common import MODEL_DIR, benchmark_app, percentiles, road_frame

FRAMES_PER_SESSION_PER_SECOND = 20  # stays under the default per-session rate limit (30/s)


async def open_sessions(client: httpx.AsyncClient, count: int) -> list[str]:
    responses = await asyncio.gather(*(client.post("/sessions") for _ in range(count)))
    return [r.raise_for_status().json()["session_id"] for r in responses]


async def run_load(url: str, rate: float, seconds: float, frame: bytes) -> dict[str, object]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        sessions = await open_sessions(client, max(1, math.ceil(rate / FRAMES_PER_SESSION_PER_SECOND)))
        latencies: list[float] = []
        statuses: Counter[str] = Counter()

        async def one(index: int, scheduled: float) -> None:
            session_id = sessions[index % len(sessions)]
            try:
                response = await client.post(
                    f"/detect/{session_id}", content=frame, headers={"content-type": "image/jpeg"}
                )
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    errors = sum(count for status, count in statuses.items() if status != "200")
    return {
        "target_rate": rate,
        "achieved_rate": round(statuses["200"] / elapsed, 1),
        "requests": total,
        "errors": errors,
        "statuses": dict(statuses),
        "latency_ms": percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, action="append", help="frames per second; repeat for several runs")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    parser.add_argument(
        "--compare-benchmark-app",
        action="store_true",
        help="first run OpenVINO's benchmark_app -hint latency on the served IR and report P50 ratios against it",
    )
    args = parser.parse_args()
    host = urlparse(args.url).hostname or ""
    if not (host.startswith("127.") or host in {"localhost", "::1"}):
        parser.error("load tests target loopback only")
    frame = road_frame()
    reference_ms = None
    if args.compare_benchmark_app:
        reference_ms = benchmark_app(next(MODEL_DIR.glob("*.xml")), "latency", 10).median_latency_ms
        print(json.dumps({"benchmark_app_latency_median_ms": reference_ms}))
    results = []
    for rate in args.rate or [10.0]:
        result = asyncio.run(run_load(args.url, rate, args.seconds, frame))
        if reference_ms is not None:
            latency = result["latency_ms"]
            assert isinstance(latency, dict)
            result["p50_vs_benchmark_app"] = round(latency["p50"] / reference_ms, 2)
        print(json.dumps(result))
        results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark_app_latency_median_ms": reference_ms, "frame_bytes": len(frame), "runs": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
