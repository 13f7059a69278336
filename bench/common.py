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
    precision: str  # what it ran in, as it reports it ("float32", "bfloat16")


def benchmark_app(xml: Path, hint: str, seconds: int, precision: str | None = None) -> BenchmarkAppResult:
    """OpenVINO's own tool on the same IR (in the precision the server runs it in, if pinned): the yardstick our
    numbers are divided by."""
    binary = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    command = [binary, "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds)]
    if precision:
        command += ["-infer_precision", precision]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    median = re.search(r"Median:\s+([\d.]+) ms", output)
    fps = re.search(r"Throughput:\s+([\d.]+) FPS", output)
    ran_in = re.search(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>", output)
    if not (median and fps and ran_in):
        raise RuntimeError(f"could not parse benchmark_app output:\n{output}")
    return BenchmarkAppResult(hint, float(median.group(1)), float(fps.group(1)), ran_in.group(1))


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
    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "openvino": ov.get_version(),
        "openvino_capabilities": capabilities,
        "bf16": "BF16" in capabilities,  # f32/f16 IRs run in bf16 here; in f32 elsewhere (several times slower)
        # Set: oneDNN kept to that instruction set (e.g. AVX2, to stand in for an older CPU); servers and
        # benchmark_app started from this environment inherit it.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def model_input_size(model_dir: Path) -> tuple[int, int]:
    """(height, width) of the model's input, from its Ultralytics metadata.yaml (`imgsz`)."""
    import yaml

    imgsz = yaml.safe_load((model_dir / "metadata.yaml").read_text()).get("imgsz", [640, 640])
    return (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))


def decode_ms(frame: bytes, model_dir: Path, repeats: int = 200) -> float:
    """Median time of the service's own decode (draft-scaled JPEG, EXIF orientation) of `frame`, alone, in ms."""
    import time

    from app.services.inference.preprocess import decode

    height, width = model_input_size(model_dir)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        decode(frame, height, width, 40_000_000)
        samples.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(samples[repeats // 10 :])), 3)


def pid_listening_on(port: int) -> int | None:
    """The process with a TCP socket listening on `port` (IPv4 or IPv6), from /proc; None if none is found."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of `pid` in MiB (VmRSS), None when it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None
