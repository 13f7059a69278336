"""What several of the deploy tests use: where the files are, the app's settings and routes, the Dockerfile parsed,
shutdown budgets, and the worker's metrics probe run against the app's own metrics."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from opentelemetry.sdk import environment_variables as otel_environment
from starlette.routing import Match

from app.settings import ENVIRONMENT_FIELDS
from tests.support.launcher import UVICORN_GRACEFUL_SECONDS

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ARTILLERY = ROOT / "artillery"
DOCKERFILE = ROOT / "Dockerfile"
APP_PORT = 8000
SCENARIOS = {"smoke": 60, "load": 600, "soak": 1800}  # scenario -> longest allowed run, seconds
OTEL_VARIABLES = {value for name, value in vars(otel_environment).items() if name.startswith("OTEL_")}


def setting_default(name: str) -> float:
    field = ENVIRONMENT_FIELDS.get(name.upper())
    return float(field.default) if field is not None else 0.0


def shutdown_seconds(env: dict[str, Any]) -> float:
    """Worst-case stop time after SIGTERM: uvicorn's graceful shutdown, then the lifespan's drain and upload flush."""
    stages = ("SHUTDOWN_DRAIN_SECONDS", "UPLOAD_FLUSH_SECONDS")
    return UVICORN_GRACEFUL_SECONDS + sum(float(env.get(name, setting_default(name.lower()))) for name in stages)


def worker_shutdown_seconds(env: dict[str, Any]) -> float:
    """hazard-worker's worst-case stop after SIGTERM (Runtime.stop): the frames in hand, the drain, the upload flush."""
    stages = ("WORKER_SHUTDOWN_SECONDS", "SHUTDOWN_DRAIN_SECONDS", "UPLOAD_FLUSH_SECONDS")
    bound = sum(float(env.get(name, setting_default(name.lower()))) for name in stages)
    assert bound > float(env.get("WORKER_SHUTDOWN_SECONDS", setting_default("worker_shutdown_seconds")))
    return bound


def setting_names() -> set[str]:
    """What a deploy file may set: app/settings.py's variables and the OpenTelemetry SDK's standard ones (it reads
    those itself once tracing is on: README "Traces")."""
    return set(ENVIRONMENT_FIELDS) | OTEL_VARIABLES


def model_cache_dir(env: dict[str, Any], workdir: str) -> str:
    """Where a process writes OpenVINO's compiled-model cache (MODEL_CACHE_DIR, relative to its working directory)."""
    cache = str(env.get("MODEL_CACHE_DIR", ENVIRONMENT_FIELDS["MODEL_CACHE_DIR"].default))
    return cache if cache.startswith("/") else f"{workdir}/{cache}"


def writable(path: str, roots: set[str]) -> bool:
    """Whether `path` lies in one of the writable mounts (or is one)."""
    return any(Path(path) == Path(root) or Path(root) in Path(path).parents for root in roots)


def load_yaml(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def serves(app: FastAPI, method: str, path: str) -> bool:
    """Whether the app has a route for this method and concrete path (asked the way a request is routed)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions(stage, "ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def metrics_probe_code(argv: list[str]) -> tuple[str, int]:
    """A probe written as `python -c <code>` that reads http://127.0.0.1:<port>/metrics: its code and port."""
    assert argv[:2] == ["python", "-c"], argv  # the image has python, not curl
    url = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", argv[2])
    assert url, argv[2]
    return argv[2], int(url[1])


def check_metrics_probe(code: str, port: int) -> None:
    """The probe's own code against the app's metrics registry (what hazard-worker serves), moved to a free port:
    it fails while no model is ready and passes once one is."""
    import sys

    from prometheus_client import start_http_server

    from app.services.observability.metrics import Metrics

    metrics = Metrics()
    local_port = free_port()
    server, _ = start_http_server(local_port, addr="127.0.0.1", registry=metrics.registry)
    local = code.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{local_port}/")

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30, check=False).returncode

    try:
        assert probe() != 0  # no model yet
        metrics.set_model_states({"v1": "available"}, {"name": "v1", "version": "1"})
        assert probe() == 0
    finally:
        server.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
