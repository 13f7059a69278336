"""Open-loop load generator: a fixed arrival rate of real 1280x720 JPEG frames against a running server.

    make run &   # or any running server
    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --rate 40 --seconds 30

    # the whole comparison of docs/PERFORMANCE.md: the floor, our sustainable rate, our latency at a low rate
    # and at 50 % / 90 % of it, the overload check at 1.5x, and the naive peer at the same rates (make bench-peer)
    .venv/bin/python -m bench.load --suite --peer-url http://127.0.0.1:8001

Arrivals are scheduled at fixed intervals whatever the answers do, and latency counts from the
scheduled send time, so a slow server shows up as queueing instead of hiding it (no coordinated
omission). Only loopback targets are allowed. Prints achieved rate, P50/P95/P99/max and errors,
per status too; every report names the CPU it ran on (bench.common.machine()).

- `--floor`: OpenVINO's benchmark_app `-hint latency` median and `-hint throughput` FPS on the served IR,
  and the service's own decode of the same frame alone: floor = benchmark_app latency + decode, and each
  run's P50 / floor.
- `--find-sustainable`: stepped search for the highest rate with P95 < 150 ms and < 1 % errors: the rate
  grows by `--search-factor` until a step fails, then `--search-refine` bisections between the last pass
  and the first failure.
- `--overload`: one run at `--overload-factor` x the sustainable rate: accepted frames' P95 < 150 ms,
  refused ones answered 503 with Retry-After in < 10 ms, no frame left to time out (504).
- `--suite`: all of the above, plus runs at `--low-rate` and at 50 % and 90 % of the sustainable rate;
  with `--peer-url`, the peer at the same rates and its own sustainable rate, and the RSS of each server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from bench.common import (
    MODEL_DIR,
    benchmark_app,
    decode_ms,
    machine,
    percentiles,
    pid_listening_on,
    road_frame,
    rss_mib,
)
from bench.http import TRANSPORT_ERRORS, LeanClient

FRAMES_PER_SESSION_PER_SECOND = 20  # stays under the default per-session rate limit (30/s)
GOAL_P95_MS = 150.0  # a sustainable rate keeps P95 under this ...
GOAL_ERROR_RATE = 0.01  # ... and errors under 1 %
REFUSAL_FAST_MS = 10.0  # a refused frame (503) is answered within this
WARMUP_REQUESTS = 20

Report = dict[str, Any]


async def open_sessions(client: LeanClient, count: int) -> list[str]:
    answers = await asyncio.gather(*(client.post("/sessions") for _ in range(count)))
    if bad := [answer.status for answer in answers if answer.status != 201]:
        raise RuntimeError(f"POST /sessions answered {bad}")
    return [answer.json()["session_id"] for answer in answers]


async def run_load(url: str, rate: float, seconds: float, frame: bytes, api_key: str | None = None) -> Report:
    async with LeanClient(url, api_key=api_key) as client:
        sessions = await open_sessions(client, max(1, math.ceil(rate / FRAMES_PER_SESSION_PER_SECOND)))
        latencies: list[float] = []
        by_status: defaultdict[str, list[float]] = defaultdict(list)
        statuses: Counter[str] = Counter()
        retry_after: Counter[str] = Counter()
        stages: defaultdict[str, list[float]] = defaultdict(list)
        refusals: defaultdict[str, list[float]] = defaultdict(list)  # the numbers a 503 gives for itself
        send_lags: list[float] = []  # how late the generator itself starts a request: its own CPU starvation

        async def one(index: int, scheduled: float) -> None:
            session_id = sessions[index % len(sessions)]
            send_lags.append((time.perf_counter() - scheduled) * 1000)
            try:
                answer = await client.post(f"/detect/{session_id}", frame, "image/jpeg")
                status = str(answer.status)
                if "retry-after" in answer.headers:
                    retry_after[status] += 1
                for stage, took_ms in server_timing(answer.headers.get("server-timing", "")):
                    stages[stage].append(took_ms)
                if answer.status == 503:
                    for key, value in refusal_details(answer.body).items():
                        refusals[key].append(value)
            except TRANSPORT_ERRORS as exc:
                status = type(exc).__name__
            elapsed_ms = (time.perf_counter() - scheduled) * 1000
            statuses[status] += 1
            latencies.append(elapsed_ms)
            by_status[status].append(elapsed_ms)

        tasks = []
        start = time.perf_counter()
        total = max(1, int(rate * seconds))
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
        "target_rate": round(rate, 1),
        "achieved_rate": round(statuses["200"] / elapsed, 1),
        "requests": total,
        "errors": errors,
        "error_rate": round(errors / total, 4),
        "statuses": dict(statuses),
        "with_retry_after": dict(retry_after),
        "latency_ms": percentiles(latencies),
        "latency_ms_by_status": {status: percentiles(samples) for status, samples in sorted(by_status.items())},
        "server_stages_ms": {stage: percentiles(samples) for stage, samples in stages.items()},
        # expected_wait_ms: what the engine expected for the refused frame; deadline_in_ms: the time it had, i.e. its
        # budget, or less when a frame already waiting would have been pushed past its own.
        "refusals": {key: percentiles(samples) for key, samples in refusals.items()},
        # Part of every latency above when the generator shares the server's cores: past saturation it lags too.
        "send_lag_ms": percentiles(send_lags),
    }


def server_timing(header: str) -> list[tuple[str, float]]:
    """`decode;dur=2.1, infer;dur=4.3` -> [("decode", 2.1), ("infer", 4.3)]."""
    stages = []
    for entry in filter(None, (part.strip() for part in header.split(","))):
        name, _, duration = entry.partition(";dur=")
        stages.append((name, float(duration)))
    return stages


def refusal_details(body: bytes) -> dict[str, float]:
    """The numeric details of a 503 answer in the service's error shape; {} for any other body (e.g. the peer's)."""
    try:
        details = json.loads(body)["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return {}
    if not isinstance(details, dict):
        return {}
    return {key: float(value) for key, value in details.items() if isinstance(value, int | float)}


def sustainable(result: Report) -> bool:
    latency: dict[str, float] = result["latency_ms"]
    return latency["p95"] < GOAL_P95_MS and result["error_rate"] < GOAL_ERROR_RATE


async def warm(url: str, frame: bytes, api_key: str | None = None) -> None:
    """A few sequential frames first, unrecorded: connection pools, the server's first-call costs."""
    async with LeanClient(url, api_key=api_key) as client:
        (session_id,) = await open_sessions(client, 1)
        for _ in range(WARMUP_REQUESTS):
            await client.post(f"/detect/{session_id}", frame, "image/jpeg")


def measure(
    label: str,
    url: str,
    rate: float,
    seconds: float,
    frame: bytes,
    cpu: str,
    floor_report: Report | None = None,
    api_key: str | None = None,
) -> Report:
    result = {"target": label, "cpu": cpu, **asyncio.run(run_load(url, rate, seconds, frame, api_key))}
    if floor_report is not None:
        result["p50_vs_floor"] = round(result["latency_ms"]["p50"] / floor_report["floor_ms"], 2)
    print(json.dumps(result), flush=True)
    return result


def find_sustainable(
    label: str,
    url: str,
    frame: bytes,
    cpu: str,
    start: float,
    seconds: float,
    factor: float,
    refine: int,
    api_key: str | None = None,
) -> Report:
    """Highest rate (frames/s) that passes `sustainable`: grow by `factor` to the first failure, then bisect."""
    steps: list[Report] = []

    def step(rate: float) -> bool:
        result = measure(f"{label}:search", url, rate, seconds, frame, cpu, api_key=api_key)
        steps.append(result)
        return sustainable(result)

    good, bad = search_rate(step, start, factor, refine)
    return {
        "sustainable_rate": round(good, 1) if good is not None else None,
        "first_failing_rate": round(bad, 1) if bad is not None else None,
        "goal": {"p95_ms_under": GOAL_P95_MS, "error_rate_under": GOAL_ERROR_RATE},
        "steps": steps,
    }


def search_rate(
    passes: Callable[[float], bool], start: float, factor: float, refine: int
) -> tuple[float | None, float | None]:
    """The highest passing rate and the lowest failing one found: from `start`, grow (or shrink) by `factor` to the
    first change, then `refine` bisections between them."""
    good: float | None = None
    bad: float | None = None
    rate = start
    if passes(rate):
        good = rate
        while True:
            rate *= factor
            if passes(rate):
                good = rate
            else:
                bad = rate
                break
    else:
        bad = rate
        while rate > 1:
            rate /= factor
            if passes(rate):
                good = rate
                break
            bad = rate
    for _ in range(refine):
        if good is None or bad is None or bad - good < 1:
            break
        middle = (good + bad) / 2
        if passes(middle):
            good = middle
        else:
            bad = middle
    return good, bad


def overload_check(result: Report) -> dict[str, bool]:
    by_status: dict[str, dict[str, float]] = result["latency_ms_by_status"]
    statuses: dict[str, int] = result["statuses"]
    accepted, refused = by_status.get("200"), by_status.get("503")
    unexpected = {status for status in statuses if status not in {"200", "503"}}
    return {
        "accepted_p95_under_150ms": accepted is not None and accepted["p95"] < GOAL_P95_MS,
        "refused_p95_under_10ms": refused is None or refused["p95"] < REFUSAL_FAST_MS,
        "every_refusal_has_retry_after": result["with_retry_after"].get("503", 0) == statuses.get("503", 0),
        "no_other_outcome": not unexpected,  # 504 (a frame left to time out), 429, connection errors ...
    }


def floor(model_dir: Path, frame: bytes, seconds: int, precision: str | None) -> Report:
    xml = next(model_dir.glob("*.xml"))
    latency = benchmark_app(xml, "latency", seconds, precision)
    throughput = benchmark_app(xml, "throughput", seconds, precision)
    decode = decode_ms(frame, model_dir)
    report = {
        "model_dir": str(model_dir),
        "inference_precision": {"served": precision, "benchmark_app": latency.precision},
        "benchmark_app_latency_median_ms": latency.median_latency_ms,
        "benchmark_app_latency_hint_fps": latency.throughput_fps,
        "benchmark_app_throughput_hint_fps": throughput.throughput_fps,
        "decode_ms": decode,
        "floor_ms": round(latency.median_latency_ms + decode, 2),
    }
    print(json.dumps({"floor": report}), flush=True)
    return report


def served_model(url: str) -> tuple[Path, str | None]:
    """The IR the server at `url` runs now (its active version's folder) and the precision it runs it in, so the
    floor is measured on the same one, the same way."""
    try:
        model = httpx.get(f"{url}/health/ready", timeout=5).json()["checks"]["model"]
        candidate = MODEL_DIR.parent / model["name"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return MODEL_DIR, None
    return candidate if candidate.is_dir() else MODEL_DIR, model.get("precision")


def server_rss(url: str) -> Report:
    port = urlparse(url).port or 80
    pid = pid_listening_on(port)
    return {"pid": pid, "rss_mib": rss_mib(pid) if pid else None}


def run_suite(args: argparse.Namespace, frame: bytes, cpu: str, floor_report: Report | None) -> Report:
    search = dict(start=args.search_start, seconds=args.search_seconds, factor=args.search_factor, refine=args.refine)
    key = args.api_key
    asyncio.run(warm(args.url, frame, key))
    ours_search = find_sustainable("ours", args.url, frame, cpu, **search, api_key=key)
    rate_s = ours_search["sustainable_rate"] or args.search_start
    rates = {"low": args.low_rate, "half": round(0.5 * rate_s, 1), "ninety": round(0.9 * rate_s, 1)}
    ours = {
        name: measure("ours", args.url, r, args.seconds, frame, cpu, floor_report, key) for name, r in rates.items()
    }
    over_rate = round(args.overload_factor * rate_s, 1)
    over = measure("ours:overload", args.url, over_rate, args.seconds, frame, cpu, api_key=key)
    report: Report = {
        "rates": rates,
        "ours": {"search": ours_search, "runs": ours, "overload": {**over, "checks": overload_check(over)}},
    }
    report["ours"]["server"] = server_rss(args.url)
    if args.peer_url:
        asyncio.run(warm(args.peer_url, frame))
        peer = {
            name: measure("peer", args.peer_url, r, args.seconds, frame, cpu, floor_report) for name, r in rates.items()
        }
        peer_search = find_sustainable("peer", args.peer_url, frame, cpu, **search)
        report["peer"] = {"search": peer_search, "runs": peer, "server": server_rss(args.peer_url)}
    report["summary"] = summary(report, floor_report)
    return report


def summary(report: Report, floor_report: Report | None) -> Report:
    """The goals of the speed issue, as ratios from this one run."""
    ours = report["ours"]
    runs = ours["runs"]
    rate_s = ours["search"]["sustainable_rate"]
    out: Report = {
        "sustainable_rate": rate_s,
        "p50_low_ms": runs["low"]["latency_ms"]["p50"],
        "p50_half_ms": runs["half"]["latency_ms"]["p50"],
        "p99_over_p95_at_ninety": round(runs["ninety"]["latency_ms"]["p99"] / runs["ninety"]["latency_ms"]["p95"], 2),
        "overload_checks": ours["overload"]["checks"],
        "rss_mib": ours["server"]["rss_mib"],
    }
    if floor_report is not None:
        out["floor_ms"] = floor_report["floor_ms"]
        out["p50_low_vs_floor"] = runs["low"]["p50_vs_floor"]
        if rate_s:
            out["sustainable_vs_benchmark_app_throughput"] = round(
                rate_s / floor_report["benchmark_app_throughput_hint_fps"], 2
            )
    if "peer" in report:
        peer_rate = report["peer"]["search"]["sustainable_rate"]
        out["peer_sustainable_rate"] = peer_rate
        out["peer_rss_mib"] = report["peer"]["server"]["rss_mib"]
        if rate_s and peer_rate:
            out["sustainable_vs_peer"] = round(rate_s / peer_rate, 2)
    return out


def loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host.startswith("127.") or host in {"localhost", "::1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HAZARD_API_KEY"),
        help="an API key with the detect scope, sent as Bearer on every request (env HAZARD_API_KEY)",
    )
    parser.add_argument("--peer-url", help="the naive peer (bench/peer.py), run with --suite at the same rates")
    parser.add_argument("--rate", type=float, action="append", help="frames per second; repeat for several runs")
    parser.add_argument("--seconds", type=float, default=30, help="length of each measured run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    parser.add_argument("--model-dir", type=Path, help="the IR for the floor; default: the server's active version")
    parser.add_argument(
        "--floor",
        "--compare-benchmark-app",
        dest="floor",
        action="store_true",
        help="first measure benchmark_app (-hint latency and throughput) and the frame's decode: the floor",
    )
    parser.add_argument("--floor-seconds", type=int, default=10, help="each benchmark_app run")
    parser.add_argument("--find-sustainable", action="store_true", help="stepped search for the sustainable rate")
    parser.add_argument("--search-start", type=float, default=10.0)
    parser.add_argument("--search-factor", type=float, default=1.25)
    parser.add_argument("--search-seconds", type=float, default=15.0, help="each step of the search")
    parser.add_argument("--refine", type=int, default=3, help="bisections after the first failing step")
    parser.add_argument("--overload", action="store_true", help="a run at --overload-factor x the sustainable rate")
    parser.add_argument("--overload-factor", type=float, default=1.5)
    parser.add_argument("--sustainable-rate", type=float, help="use this instead of searching (for --overload)")
    parser.add_argument("--low-rate", type=float, default=5.0)
    parser.add_argument("--suite", action="store_true", help="floor, search, low/50 %%/90 %% runs, overload, peer")
    args = parser.parse_args()
    key = args.api_key
    for url in (args.url, args.peer_url):
        if url and not loopback(url):
            parser.error("load tests target loopback only")
    frame = road_frame()
    host = machine()
    served_dir, precision = served_model(args.url)
    model_dir = args.model_dir or served_dir
    runs_in = precision or ("bf16" if host["bf16"] else "f32")
    isa = f", oneDNN capped at {host['onednn_max_cpu_isa']}" if host["onednn_max_cpu_isa"] else ""
    cpu = f"{host['cpu']} ({host['cores']} cores, {'bf16' if host['bf16'] else 'no bf16'}, runs {runs_in}{isa})"
    print(json.dumps({"machine": host}), flush=True)
    floor_report = floor(model_dir, frame, args.floor_seconds, precision) if args.floor or args.suite else None
    report: Report = {"machine": host, "frame_bytes": len(frame), "url": args.url, "floor": floor_report}
    if args.suite:
        report.update(run_suite(args, frame, cpu, floor_report))
        print(json.dumps({"summary": report["summary"]}), flush=True)
    else:
        runs = [measure("ours", args.url, r, args.seconds, frame, cpu, floor_report, key) for r in args.rate or []]
        report["runs"] = runs
        rate_s = args.sustainable_rate
        if args.find_sustainable:
            search_args = (args.search_start, args.search_seconds, args.search_factor, args.refine)
            report["search"] = find_sustainable("ours", args.url, frame, cpu, *search_args, api_key=key)
            rate_s = report["search"]["sustainable_rate"]
        if args.overload:
            if not rate_s:
                parser.error("--overload needs --find-sustainable or --sustainable-rate")
            over_rate = args.overload_factor * rate_s
            over = measure("ours:overload", args.url, over_rate, args.seconds, frame, cpu, api_key=key)
            report["overload"] = {**over, "checks": overload_check(over)}
            print(json.dumps({"overload_checks": report["overload"]["checks"]}), flush=True)
        if not (runs or args.find_sustainable or args.overload):
            report["runs"] = [measure("ours", args.url, 10.0, args.seconds, frame, cpu, floor_report, key)]
        report["server"] = server_rss(args.url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
