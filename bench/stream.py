"""Frames over one WebSocket stream per camera vs one HTTP request per frame: same frame, same server, one run.

    make run &   # a server on loopback; one session per camera: raise SESSION_RATE_LIMIT_* past the rates searched
    .venv/bin/python -m bench.stream --url http://127.0.0.1:8000          # or: make bench-stream

Each camera has its own session and sends open loop: frame i is due at start + i / rate whatever the answers do,
and latency counts from that due time (no coordinated omission), over the stream (binary frame messages on one
connection, answers matched by frame_id) or over HTTP (POST /detect per frame, as many in flight as it takes, on
bench.http's lean keep-alive client). Measured, alternating stream and HTTP:

- P50 at `--low-rate` (5 frames/s) on one camera; and the same through the `hazard` client, as an application using
  it waits: `AsyncHazardClient.detect` (httpx, multipart, the answer read into its model) against
  `AsyncHazardClient.stream` (one WebSocket), one frame in flight, alternating blocks;
- the sustainable rate on 1 and on 4 cameras (P95 of the answered frames < 150 ms and < 1 % of the frames not
  answered: dropped late, overloaded or superseded over the stream, any non-200 over HTTP), stepped search as
  bench/load.py's;
- `--overload-factor` (1.5) x the 4-camera stream rate over 4 streams: the answered frames' P95 and the most frames
  a stream had outstanding (sent, no outcome yet: at most STREAM_WINDOW in the engine, 1 waiting, and what is on
  the wire);
- `--idle-streams` (200) open streams that send nothing: the server's RSS and CPU seconds over `--idle-seconds`,
  against the same span with none open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection, connect

from bench.common import machine, percentiles, pid_listening_on, road_frame, rss_mib
from bench.http import TRANSPORT_ERRORS, LeanClient
from bench.load import GOAL_ERROR_RATE, GOAL_P95_MS, loopback, open_sessions, search_rate
from hazard_client.client import AsyncHazardClient
from hazard_client.stream import frame_message, stream_url

Report = dict[str, Any]
MODES = ("stream", "http")
WARMUP_FRAMES = 10


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # answered frames: due time -> answer, ms
    outcomes: Counter[str] = field(default_factory=Counter)
    max_outstanding: int = 0  # a stream's frames sent without an outcome yet, at most

    def answered(self, due: float) -> None:
        self.outcomes["answered"] += 1
        self.latencies.append((time.perf_counter() - due) * 1000)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


async def until(due: float) -> None:
    delay = due - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def stream_outcome(answer: dict[str, Any]) -> str:
    if "dropped" in answer:
        return f"dropped_{answer['dropped']}"
    return f"error_{answer['error']['code']}" if "error" in answer else "answered"


async def stream_camera(ws: ClientConnection, frames: list[tuple[int, float]], frame: bytes, tally: Tally) -> None:
    """Sends each frame when due on one open stream; one outcome comes back per frame."""
    due_of: dict[int, float] = {}

    async def read() -> None:
        for _ in frames:
            answer = json.loads(await ws.recv())
            due = due_of.pop(answer["frame_id"])
            outcome = stream_outcome(answer)
            if outcome == "answered":
                tally.answered(due)
            else:
                tally.outcomes[outcome] += 1

    reader = asyncio.create_task(read())
    for frame_id, due in frames:
        await until(due)
        due_of[frame_id] = due
        await ws.send(frame_message({"frame_id": frame_id}, frame))
        tally.max_outstanding = max(tally.max_outstanding, len(due_of))
    async with asyncio.timeout(60):
        await reader


async def http_camera(
    client: LeanClient, session_id: str, frames: list[tuple[int, float]], frame: bytes, tally: Tally
) -> None:
    """POST /detect for each frame when due, without waiting for the answers before."""

    async def one(due: float) -> None:
        try:
            answer = await client.post(f"/detect/{session_id}", frame, "image/jpeg")
        except TRANSPORT_ERRORS as exc:
            tally.outcomes[type(exc).__name__] += 1
            return
        if answer.status == 200:
            tally.answered(due)
        else:
            tally.outcomes[f"status_{answer.status}"] += 1

    tasks = []
    for _, due in frames:
        await until(due)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)


async def client_p50(url: str, rate: float, frames: int, frame: bytes, api_key: str | None, blocks: int = 4) -> Report:
    """P50 (ms, from each frame's due time to its answer) through the `hazard` client, `detect` against `stream`, one
    session, one frame in flight: `blocks` blocks of `frames / blocks` each way, alternating, after one unrecorded
    block each (first-call costs). A frame is sent when due, or once the one before is answered if that is later."""
    waited: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_block = max(1, frames // blocks)
    async with AsyncHazardClient(url, api_key=api_key) as client:
        session_id = (await client.create_session()).session_id
        for block in range(blocks + 1):
            for mode in MODES:
                send = _client_stream if mode == "stream" else _client_http
                latencies = await send(client, session_id, frame, WARMUP_FRAMES if block == 0 else per_block, rate)
                if block:
                    waited[mode] += latencies
    p50 = {mode: percentiles(values)["p50"] for mode, values in waited.items()}
    return {"rate": rate, "frames_each": len(waited["http"]), "p50_ms": p50}


def _due_times(count: int, rate: float) -> list[float]:
    """`count` frames at `rate` from just after now: a sender asks once it is ready to send."""
    start = time.perf_counter() + 0.05
    return [start + index / rate for index in range(count)]


async def _client_http(
    client: AsyncHazardClient, session_id: str, frame: bytes, count: int, rate: float
) -> list[float]:
    waited = []
    for due in _due_times(count, rate):
        await until(due)
        await client.detect(session_id, frame)
        waited.append((time.perf_counter() - due) * 1000)
    return waited


async def _client_stream(
    client: AsyncHazardClient, session_id: str, frame: bytes, count: int, rate: float
) -> list[float]:
    waited = []
    async with client.stream(session_id) as stream:
        for frame_id, due in enumerate(_due_times(count, rate)):
            await until(due)
            await stream.send(frame, frame_id)
            answer = await stream.receive()
            if answer.get("frame_id") != frame_id or "detections" not in answer:
                raise RuntimeError(f"frame {frame_id} was not answered: {answer}")
            waited.append((time.perf_counter() - due) * 1000)
    return waited


def schedule(rate: float, seconds: float, cameras: int, start: float) -> list[list[tuple[int, float]]]:
    """Frame i due at start + i / rate, dealt round-robin to the cameras."""
    plan: list[list[tuple[int, float]]] = [[] for _ in range(cameras)]
    for index in range(max(cameras, int(rate * seconds))):
        plan[index % cameras].append((index, start + index / rate))
    return plan


async def run_cameras(
    mode: str, url: str, rate: float, seconds: float, cameras: int, frame: bytes, api_key: str | None
) -> Report:
    """One open-loop run over `cameras` cameras (each its own session) at `rate` frames/s in all."""
    tallies = [Tally() for _ in range(cameras)]
    async with LeanClient(url, api_key=api_key) as client:
        sessions = await open_sessions(client, cameras)
        if mode == "stream":
            headers = auth_headers(api_key)
            sockets = [await connect(stream_url(url, s), additional_headers=headers, max_size=None) for s in sessions]
            start = time.perf_counter() + 0.05
            plan = schedule(rate, seconds, cameras, start)
            runs: list[Awaitable[None]] = [
                stream_camera(ws, plan[n], frame, tallies[n]) for n, ws in enumerate(sockets)
            ]
        else:
            start = time.perf_counter() + 0.05
            plan = schedule(rate, seconds, cameras, start)
            runs = [http_camera(client, sessions[n], plan[n], frame, tallies[n]) for n in range(cameras)]
        await asyncio.gather(*runs)
        elapsed = time.perf_counter() - start
        if mode == "stream":
            await asyncio.gather(*(ws.close() for ws in sockets))
    return run_report(mode, rate, cameras, elapsed, tallies)


def run_report(mode: str, rate: float, cameras: int, elapsed: float, tallies: list[Tally]) -> Report:
    outcomes: Counter[str] = sum((tally.outcomes for tally in tallies), Counter())
    latencies = [ms for tally in tallies for ms in tally.latencies]
    total = sum(outcomes.values())
    report: Report = {
        "mode": mode,
        "cameras": cameras,
        "target_rate": round(rate, 1),
        "achieved_rate": round(outcomes["answered"] / elapsed, 1),
        "frames": total,
        "outcomes": dict(outcomes),
        "not_answered_rate": round((total - outcomes["answered"]) / max(1, total), 4),
        "latency_ms": percentiles(latencies) if latencies else None,
    }
    if mode == "stream":
        report["max_outstanding_per_stream"] = max(tally.max_outstanding for tally in tallies)
    print(json.dumps(report), flush=True)
    return report


def sustainable(report: Report) -> bool:
    latency = report["latency_ms"]
    return latency is not None and latency["p95"] < GOAL_P95_MS and report["not_answered_rate"] < GOAL_ERROR_RATE


def find_sustainable(run: Callable[[float], Report], args: argparse.Namespace) -> Report:
    steps: list[Report] = []

    def passes(rate: float) -> bool:
        steps.append(run(rate))
        return sustainable(steps[-1])

    good, bad = search_rate(passes, args.search_start, args.search_factor, args.refine)
    return {
        "sustainable_rate": round(good, 1) if good is not None else None,
        "first_failing_rate": round(bad, 1) if bad is not None else None,
        "steps": steps,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far (/proc/pid/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cost(url: str, count: int, seconds: float, api_key: str | None) -> Report:
    """The server's RSS and CPU over `seconds` with no stream open, then with `count` open streams sending nothing."""
    pid = pid_listening_on(urlparse(url).port or 80)
    if pid is None:
        return {"error": "no process found listening on the server's port (another user's?)"}

    async def span() -> float:
        before = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        return round(cpu_seconds(pid) - before, 3)

    rss_before, cpu_without = rss_mib(pid), await span()
    async with LeanClient(url, api_key=api_key) as client:
        (session_id,) = await open_sessions(client, 1)
    target = stream_url(url, session_id)
    sockets = [await connect(target, additional_headers=auth_headers(api_key)) for _ in range(count)]
    try:
        await asyncio.sleep(1.0)  # every stream past its door
        refused = [ws.close_code for ws in sockets if ws.close_code is not None]
        rss_open, cpu_with = rss_mib(pid), await span()
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "streams": count,
        "refused": len(refused),
        "seconds": seconds,
        "rss_mib_before": rss_before,
        "rss_mib_open": rss_open,
        "rss_mib_added": round((rss_open or 0) - (rss_before or 0), 1),
        "cpu_seconds_without_streams": cpu_without,
        "cpu_seconds_with_streams": cpu_with,
    }


def compare(args: argparse.Namespace, frame: bytes) -> Report:
    def run(mode: str, cameras: int, seconds: float) -> Callable[[float], Report]:
        return lambda rate: asyncio.run(run_cameras(mode, args.url, rate, seconds, cameras, frame, args.api_key))

    for mode in MODES:  # first-call costs, unrecorded
        run(mode, 1, WARMUP_FRAMES / args.low_rate)(args.low_rate)
    low = {mode: run(mode, 1, args.seconds)(args.low_rate) for mode in MODES}
    frames = int(args.low_rate * args.seconds)
    client_low = asyncio.run(client_p50(args.url, args.low_rate, frames, frame, args.api_key))
    print(json.dumps({"hazard_client_low_rate": client_low}), flush=True)
    searches = {
        f"{mode}_{cameras}": find_sustainable(run(mode, cameras, args.search_seconds), args)
        for cameras in args.cameras
        for mode in MODES
    }
    most = max(args.cameras)
    rate_4 = searches[f"stream_{most}"]["sustainable_rate"] or args.search_start
    overload = run("stream", most, args.seconds)(args.overload_factor * rate_4)
    report: Report = {"low_rate": low, "hazard_client_low_rate": client_low, "searches": searches, "overload": overload}
    if args.idle_streams:
        report["idle"] = asyncio.run(idle_cost(args.url, args.idle_streams, args.idle_seconds, args.api_key))
        print(json.dumps({"idle": report["idle"]}), flush=True)
    report["summary"] = summary(report, args, most)
    return report


def summary(report: Report, args: argparse.Namespace, most: int) -> Report:
    low = {mode: report["low_rate"][mode]["latency_ms"]["p50"] for mode in MODES}
    out: Report = {
        f"p50_at_{args.low_rate:g}fps_ms": low,
        "p50_stream_below_http_ms": round(low["http"] - low["stream"], 2),
    }
    through_client = report["hazard_client_low_rate"]["p50_ms"]
    out[f"p50_at_{args.low_rate:g}fps_hazard_client_ms"] = through_client
    out["p50_stream_below_http_hazard_client_ms"] = round(through_client["http"] - through_client["stream"], 2)
    for cameras in args.cameras:
        rates = {mode: report["searches"][f"{mode}_{cameras}"]["sustainable_rate"] for mode in MODES}
        out[f"sustainable_{cameras}_cameras"] = rates
        if rates["stream"] and rates["http"]:
            out[f"sustainable_{cameras}_stream_vs_http"] = round(rates["stream"] / rates["http"], 2)
    over = report["overload"]
    out["overload"] = {
        "rate": over["target_rate"],
        "answered_p95_ms": over["latency_ms"]["p95"] if over["latency_ms"] else None,
        "answered_p95_under_150ms": bool(over["latency_ms"]) and over["latency_ms"]["p95"] < GOAL_P95_MS,
        "max_outstanding_per_stream": over["max_outstanding_per_stream"],
        "window": args.window,
        "outcomes": over["outcomes"],
    }
    if "idle" in report:
        out["idle"] = report["idle"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("HAZARD_API_KEY"), help="a detect key (env HAZARD_API_KEY)")
    parser.add_argument("--low-rate", type=float, default=5.0, help="the P50 comparison's rate, one camera")
    parser.add_argument("--seconds", type=float, default=20.0, help="the low-rate and overload runs")
    parser.add_argument("--cameras", type=int, action="append", help="concurrent cameras of the searches (1 and 4)")
    parser.add_argument("--search-start", type=float, default=10.0)
    parser.add_argument("--search-factor", type=float, default=1.25)
    parser.add_argument("--search-seconds", type=float, default=10.0, help="each step of the searches")
    parser.add_argument("--refine", type=int, default=2, help="bisections after the first failing step")
    parser.add_argument("--overload-factor", type=float, default=1.5)
    parser.add_argument("--window", type=int, default=2, help="the server's STREAM_WINDOW (reported beside the max)")
    parser.add_argument("--idle-streams", type=int, default=200, help="open idle streams to weigh (0: skip)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/stream.json"))
    args = parser.parse_args()
    args.cameras = args.cameras or [1, 4]
    if not loopback(args.url):
        parser.error("load tests target loopback only")
    frame = road_frame()
    report: Report = {"machine": machine(), "frame_bytes": len(frame), "url": args.url, **compare(args, frame)}
    print(json.dumps({"summary": report["summary"]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
