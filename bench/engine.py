"""The engine alone vs. OpenVINO's benchmark_app on the same IR, in the same run.

    .venv/bin/python -m bench.engine --seconds 10 --rounds 3

Prints latency at concurrency 1 and throughput at saturation, for benchmark_app and for the engine
(pool only: a preprocessed batch through our async infer-request pool; and the full engine: JPEG
decode + letterbox + infer + NMS), with their ratios; writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from app.services.inference.types import DetectOptions, Priority
from bench.common import MODEL_DIR, benchmark_app, percentiles, road_frame


async def sequential_latency(engine: DetectionEngine, frame: bytes, seconds: float) -> dict[str, dict[str, float]]:
    batch = np.full((1, engine.info.input_height, engine.info.input_width, 3), 114, np.uint8)
    pool_ms: list[float] = []
    full_ms: list[float] = []
    for samples, run in (
        (pool_ms, lambda: engine.pool.infer(batch, time.monotonic() + 10)),
        (full_ms, lambda: engine.detect(frame, DetectOptions(), time.monotonic() + 10)),
    ):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            await run()
            samples.append((time.perf_counter() - started) * 1000)
    return {"pool": percentiles(pool_ms), "full": percentiles(full_ms)}


async def saturated_throughput(engine: DetectionEngine, frame: bytes | None, seconds: float, concurrency: int) -> float:
    batch = np.full((1, engine.info.input_height, engine.info.input_width, 3), 114, np.uint8)
    done = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            if frame is None:
                await engine.pool.infer(batch, time.monotonic() + 10)
            else:
                # Batch priority: FIFO, outside the live admission policy (adaptive LIFO and refusals would starve
                # one closed-loop client and stop the run): the engine's throughput, not the live path's policy.
                await engine.detect(frame, DetectOptions(), time.monotonic() + 10, Priority.BATCH)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def measure_ours(model_dir: Path, seconds: float) -> dict[str, Any]:
    frame = road_frame()
    latency_model = load_model(model_dir, performance_hint="LATENCY")
    latency_engine = DetectionEngine(latency_model, latency_model.optimal_requests, 256, 40_000_000)
    await latency_engine.warm_up(10)
    ours_latency = await sequential_latency(latency_engine, frame, seconds)
    served_fps = await saturated_throughput(latency_engine, frame, seconds, 4 * latency_engine.pool.size)
    throughput_model = load_model(model_dir, performance_hint="THROUGHPUT")
    size = throughput_model.optimal_requests
    throughput_engine = DetectionEngine(throughput_model, size, 256, 40_000_000)
    await throughput_engine.warm_up(10)
    pool_fps = await saturated_throughput(throughput_engine, None, seconds, 2 * size)
    full_fps = await saturated_throughput(throughput_engine, frame, seconds, 2 * size)
    return {
        "latency_pool_size": latency_engine.pool.size,
        "throughput_pool_size": size,
        "latency_ms": ours_latency,
        "throughput_fps": {
            "pool": round(pool_fps, 1),
            "full": round(full_fps, 1),
            "served_config_full": round(served_fps, 1),
        },
    }


def one_round(model_dir: Path, seconds: int) -> dict[str, Any]:
    """benchmark_app and ours back to back, so both see the same machine state."""
    xml = next(model_dir.glob("*.xml"))
    reference_latency = benchmark_app(xml, "latency", seconds)
    ours = asyncio.run(measure_ours(model_dir, seconds))
    reference_throughput = benchmark_app(xml, "throughput", seconds)
    latency, fps = ours["latency_ms"], ours["throughput_fps"]
    assert isinstance(latency, dict) and isinstance(fps, dict)
    return {
        "benchmark_app": {
            "latency_hint_median_ms": reference_latency.median_latency_ms,
            "latency_hint_fps": reference_latency.throughput_fps,
            "throughput_hint_fps": reference_throughput.throughput_fps,
        },
        "engine": ours,
        "ratios": {
            "pool_latency_p50_vs_benchmark_app": round(latency["pool"]["p50"] / reference_latency.median_latency_ms, 3),
            "full_latency_p50_vs_benchmark_app": round(latency["full"]["p50"] / reference_latency.median_latency_ms, 3),
            "pool_throughput_vs_benchmark_app": round(fps["pool"] / reference_throughput.throughput_fps, 3),
            "full_throughput_vs_benchmark_app": round(fps["full"] / reference_throughput.throughput_fps, 3),
        },
    }


def median_ratios(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {name: float(np.median([r["ratios"][name] for r in rounds])) for name in rounds[0]["ratios"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the machine's noise shows in their spread"
    )
    parser.add_argument(
        "--model-dir", type=Path, action="append", help="a version to measure (repeat); default: FP16 and INT8"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine.json"))
    args = parser.parse_args()
    versions: list[Path] = args.model_dir or [MODEL_DIR, MODEL_DIR.parent / "best0408_int8_openvino_model"]
    # Versions interleave within each round, so INT8 and FP16 see the same machine state too.
    rounds: dict[str, list[dict[str, Any]]] = {version.name: [] for version in versions}
    for _ in range(args.rounds):
        for version in versions:
            rounds[version.name].append(one_round(version, args.seconds))
    report = {name: {"median_ratios": median_ratios(runs), "rounds": runs} for name, runs in rounds.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({name: entry["median_ratios"] for name, entry in report.items()}, indent=2))


if __name__ == "__main__":
    main()
