"""Shared pieces of the benchmarks: OpenVINO's benchmark_app on the same IR, percentiles, a real frame."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from scenes import generate_scene

MODEL_DIR = Path("models/best0408_openvino_model")


@dataclass(frozen=True)
class BenchmarkAppResult:
    hint: str
    median_latency_ms: float
    throughput_fps: float


def benchmark_app(xml: Path, hint: str, seconds: int) -> BenchmarkAppResult:
    """OpenVINO's own tool on the same IR: the yardstick our numbers are divided by."""
    binary = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    command = [binary, "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    median = re.search(r"Median:\s+([\d.]+) ms", output)
    fps = re.search(r"Throughput:\s+([\d.]+) FPS", output)
    if not (median and fps):
        raise RuntimeError(f"could not parse benchmark_app output:\n{output}")
    return BenchmarkAppResult(hint, float(median.group(1)), float(fps.group(1)))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "p99": round(float(np.percentile(values, 99)), 2),
        "max": round(float(values.max()), 2),
    }


def road_frame(seed: int = 4, size: tuple[int, int] = (1280, 720)) -> bytes:
    """A generated 1280x720 road scene with hazards, as a field app would send it (JPEG q85)."""
    rng = np.random.default_rng(seed)
    while True:
        scene = generate_scene(rng, size)
        if scene.hazards:
            buffer = io.BytesIO()
            scene.image.save(buffer, format="JPEG", quality=85)
            return buffer.getvalue()


def machine() -> dict[str, object]:
    """Which CPU a figure is from: OpenVINO runs the IR in bf16 where the CPU has it, in f32 elsewhere."""
    import openvino as ov

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {"cpu": model, "cores": os.cpu_count(), "openvino_capabilities": list(capabilities)}
