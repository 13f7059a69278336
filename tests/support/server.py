"""A real uvicorn process serving the app, as operators run it, with its stdout kept in a log file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
MODEL_DIR = ROOT / "models" / "best0408_openvino_model"


LATENCY_BUDGET_FOR_BURSTS = 30.0
# A frame on a machine the suite shares among its workers can wait past production's 1 s; tests of the deadline set
# their own.
SUITE_REQUEST_TIMEOUT_SECONDS = 10.0


def process_env(redis_url: str, tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of a real server or worker process of the suite: its own fleet unless told otherwise."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(MODEL_DIR),
        "MODEL_REPOSITORY": str(MODEL_DIR.parent),
        "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
        "FLEET_NAME": f"test-{uuid.uuid4().hex[:12]}",  # its own desired model state unless told otherwise
        "STORAGE_DIR": str(tmp_path / "uploads"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "REGISTRY_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
        "LOG_LEVEL": "INFO",
        "CLOUDINARY_URL": "cloudinary://123456:never-log-this-secret@demo?upload_prefix=http://127.0.0.1:9",
        # Bursts of concurrent frames test concurrency, not admission; the latency budget is tested on its own.
        "LIVE_LATENCY_BUDGET_SECONDS": str(LATENCY_BUDGET_FOR_BURSTS),
        "REQUEST_TIMEOUT_SECONDS": str(SUITE_REQUEST_TIMEOUT_SECONDS),
        **env,
    }


class Server:
    # A subclass may name the command that serves on `--host 127.0.0.1 --port <port>` (those two are appended),
    # in place of uvicorn with this suite's flags, e.g. `(sys.executable, "-m", "app")`.
    launcher: tuple[str, ...] | None = None

    def __init__(self, redis_url: str, tmp_path: Path, access_log_flag: str = "--no-access-log", **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp_path / "server.log"
        environment = process_env(redis_url, tmp_path, **env)
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        command += [access_log_flag, "--timeout-graceful-shutdown", "20"]
        if self.launcher is not None:
            command = [*self.launcher, "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, within: float = 60.0) -> None:
        wait_until_ready(self.base_url, self.process, self.log_path, within)

    def wait_live(self, within: float = 60.0) -> None:
        """Until it serves, model or not: what the admin API and key checks need, without waiting on a model load."""
        wait_until_ready(self.base_url, self.process, self.log_path, within, probe="/health/live")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def wait_until_ready(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, within: float = 60.0, probe: str = "/health/ready"
) -> None:
    """Poll `probe` until 200; fail at once (with the log) if the server exits, or after `within` s."""
    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None, f"server exited {process.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"not ready within {within} s:\n{log_path.read_text()}"
        try:
            if httpx.get(f"{base_url}{probe}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


class WorkerProcess:
    """A real `hazard-worker` process (python -m app.entrypoints.worker), with its stdout kept in a log file."""

    def __init__(self, redis_url: str, tmp_path: Path, **env: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        self.log_path = tmp_path / "worker.log"
        environment = process_env(redis_url, tmp_path, WORKER_METRICS_PORT=str(self.metrics_port), **env)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.entrypoints.worker"],
            cwd=ROOT,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def wait_ready(self, within: float = 60.0) -> None:
        """Until its model is warm and its consumers run (its log says so)."""
        deadline = time.monotonic() + within
        while not any(line.get("event") == "queue_consumers_started" for line in self.log_lines()):
            assert self.process.poll() is None, f"worker exited {self.process.returncode}:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"worker not ready within {within} s:\n{self.log_path.read_text()}"
            time.sleep(0.1)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()
