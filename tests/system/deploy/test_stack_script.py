"""scripts/stack.sh and the Makefile's operator targets: strict bash, stop budgets, the records it keeps, and a
whole up / restart / down of the API, a worker and Redis."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.deploy.common import (
    ARTILLERY,
    ROOT,
    free_port,
    setting_names,
    shutdown_seconds,
    worker_shutdown_seconds,
)

STACK = ROOT / "scripts" / "stack.sh"


def test_stack_script_is_strict_bash() -> None:
    text = STACK.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(STACK)], check=True, timeout=10)


def test_stack_waits_out_each_process_stop_before_sigkill() -> None:
    text = STACK.read_text(encoding="utf-8")
    api = re.search(r'^STOP_TIMEOUT="\$\{STOP_TIMEOUT:-(\d+)\}"', text, re.MULTILINE)
    worker = re.search(r'^WORKER_STOP_TIMEOUT="\$\{WORKER_STOP_TIMEOUT:-(\d+)\}"', text, re.MULTILINE)
    assert api and worker
    assert int(api[1]) > shutdown_seconds({})
    assert int(worker[1]) > worker_shutdown_seconds({})


def test_makefile_operator_targets_call_the_stack_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    declared = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert declared
    phony = set(declared[1].split())
    for target in ("up", "down", "status", "logs", "restart-web", "restart-worker"):
        assert target in phony, target
        recipe = re.search(rf"^{re.escape(target)}:.*\n\t(.*)$", makefile, re.MULTILINE)
        assert recipe and f"scripts/stack.sh {target}" in recipe[1], target


def test_stack_status_says_not_running_when_nothing_runs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RUN_DIR": str(tmp_path / "run"),
        "LOG_FILE": str(tmp_path / "api.log"),
        "PORT": str(free_port()),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "HOST": "127.0.0.1",
    }
    result = subprocess.run(
        ["bash", str(STACK), "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "api: not running" in result.stdout
    assert "worker: not running" in result.stdout
    assert "redis: not running" in result.stdout


STACK_KEPT_SETTINGS = ("FLEET_NAME", "QUEUE_REDIS_URL", "INFERENCE_MODE", "EMBEDDED_WORKER")  # stack.sh records them


def stack_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The stack's state (PID files, logs, Redis data, uploads, the worker's) under tmp_path: never the repo's var/."""
    given = {"HOST", "PORT", "REDIS_URL", "MAKEFLAGS", "WORKER_METRICS_PORT", *STACK_KEPT_SETTINGS}
    env = {key: value for key, value in os.environ.items() if key not in given}
    env.update(
        RUN_DIR=str(tmp_path / "run"),
        LOG_FILE=str(tmp_path / "log" / "api.log"),
        REDIS_DIR=str(tmp_path / "redis"),
        STORAGE_DIR=str(tmp_path / "uploads"),
        SPOOL_DIR=str(tmp_path / "spool"),
        READY_TIMEOUT="60",
    )
    env.update(values)
    return env


def stack(command: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ensure_redis(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What `make run` does before it serves."""
    script = ROOT / "scripts" / "ensure-redis.sh"
    return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)


def wait_until(predicate: Any, seconds: float = 10) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def recorded_pid(path: Path) -> int:
    return int(path.read_text(encoding="utf-8").split()[0])


def kill_recorded(run_dir: Path) -> None:
    """Last resort after a failed test: stop whatever the stack recorded under this test's own run dir."""

    for record in run_dir.glob("*.pid") if run_dir.is_dir() else []:
        try:
            pid = recorded_pid(record)
            os.kill(pid, signal.SIGTERM)
            if not wait_until(lambda pid=pid: not pid_alive(pid), 20):
                os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


@pytest.fixture
def stack_dirs(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    kill_recorded(tmp_path / "run")


def test_makefile_passes_host_and_port_to_the_stack_only_when_given(tmp_path: Path) -> None:
    env = stack_env(tmp_path)

    def recipe(*args: str, extra: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", *args],
            cwd=ROOT,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()

    for target in ("status", "down"):
        assert "PORT=" not in recipe(target) and "HOST=" not in recipe(target)
        assert "PORT='8123'" in recipe(target, "PORT=8123")
        assert "HOST='0.0.0.0'" in recipe(target, extra={"HOST": "0.0.0.0"})
    assert recipe("run").endswith("/hazard-api --host 127.0.0.1 --port 8000")
    assert recipe("run", "PORT=8123").endswith(" --port 8123")


def test_stack_down_is_harmless_when_nothing_ever_ran(stack_dirs: Path) -> None:
    env = stack_env(stack_dirs, PORT=str(free_port()), REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for _ in range(2):
        result = stack("down", env)
        assert result.returncode == 0, result.stderr
        assert "api not running" in result.stdout


def test_redis_started_for_make_run_is_recorded_and_stopped_by_down(stack_dirs: Path) -> None:
    redis_port = free_port()
    env = stack_env(stack_dirs, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    started = ensure_redis(env)
    assert started.returncode == 0, started.stderr
    record = stack_dirs / "run" / f"redis-{redis_port}.pid"
    assert redis_answers(redis_port) and pid_alive(recorded_pid(record))
    assert (stack_dirs / "redis" / str(redis_port) / "redis.log").is_file()
    pid = recorded_pid(record)

    stopped = stack("down", stack_env(stack_dirs))  # no REDIS_URL: the record says which Redis is ours
    assert stopped.returncode == 0, stopped.stderr
    assert wait_until(lambda: not redis_answers(redis_port))
    assert not pid_alive(pid) and not record.exists()


def test_stack_never_stops_a_redis_it_did_not_start(stack_dirs: Path) -> None:
    from tests.support.redis_process import RedisProcess

    foreign = RedisProcess(stack_dirs / "foreign")
    foreign.start()
    try:
        env = stack_env(stack_dirs, REDIS_URL=foreign.url)
        seen = ensure_redis(env)
        assert seen.returncode == 0, seen.stderr
        assert "not started here" in seen.stdout
        assert not list((stack_dirs / "run").glob("redis-*.pid"))
        assert stack("down", env).returncode == 0
        assert redis_answers(foreign.port)
    finally:
        foreign.kill()


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process was started with (Linux /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def metrics_text(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def batch_frames_done(metrics: str) -> float:
    done = 'hazard_queued_frames_total{outcome="done",priority="batch"}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(done))


def run_one_frame_job(base: str) -> None:
    """A batch job of one frame through the API, until it completes."""
    import httpx

    frame = (ARTILLERY / "frames" / "road_1280x720.jpg").read_bytes()
    with httpx.Client(base_url=base, timeout=30) as client:
        job_id = client.post("/jobs", json={"name": "stack"}).json()["job_id"]
        added = client.post(f"/jobs/{job_id}/frames", files=[("file", ("road.jpg", frame, "image/jpeg"))])
        assert added.status_code == 202, added.text
        assert client.post(f"/jobs/{job_id}/close").status_code == 200
        assert wait_until(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "completed", 30)
        assert client.get(f"/jobs/{job_id}").json()["done"] == 1


def test_stack_keeps_only_settings_the_app_has() -> None:
    kept = re.search(r'^KEPT_SETTINGS="([^"]*)"', STACK.read_text(encoding="utf-8"), re.MULTILINE)
    assert kept and tuple(kept[1].split()) == STACK_KEPT_SETTINGS
    assert set(STACK_KEPT_SETTINGS) <= setting_names()


def test_stack_up_runs_the_api_and_a_worker_restarts_each_alone_and_down_stops_all(stack_dirs: Path) -> None:
    if not os.access(ROOT / ".venv" / "bin" / "hazard-api", os.X_OK):
        pytest.skip(".venv is not installed (make run or make test installs it)")
    import uuid

    port, redis_port, metrics_port = free_port(), free_port(), free_port()
    fleet = f"stack-{uuid.uuid4().hex[:8]}"
    base = f"http://127.0.0.1:{port}"
    run_dir = stack_dirs / "run"
    told = stack_env(
        stack_dirs,
        PORT=str(port),
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        WORKER_METRICS_PORT=str(metrics_port),
        FLEET_NAME=fleet,
    )
    untold = stack_env(stack_dirs)  # no PORT, REDIS_URL, WORKER_METRICS_PORT, FLEET_NAME: all from the records

    up = stack("up", told, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    assert http_status(f"{base}/health/ready") == 200
    assert "\nhazard_model_ready 1.0" in metrics_text(metrics_port)  # `up` returns once the worker's model is warm
    assert redis_answers(redis_port)
    api_pid = recorded_pid(run_dir / "api.pid")
    worker_pid = recorded_pid(run_dir / "worker.pid")
    redis_pid = recorded_pid(run_dir / f"redis-{redis_port}.pid")
    for record in ("api.env", "worker.env"):
        assert (run_dir / record).stat().st_mode & 0o077 == 0  # REDIS_URL may hold a password
    api_env, worker_env = process_environment(api_pid), process_environment(worker_pid)
    assert api_env["EMBEDDED_WORKER"] == "false"  # the worker takes the batch frames
    assert api_env["FLEET_NAME"] == worker_env["FLEET_NAME"] == fleet  # one queue
    assert worker_env["WORKER_METRICS_PORT"] == str(metrics_port)
    assert worker_env["SPOOL_DIR"] != api_env["SPOOL_DIR"]  # never retries the API's spooled uploads

    status = stack("status", untold)
    assert status.returncode == 0, status.stderr
    assert f"api: running (pid {api_pid}) on {base}" in status.stdout
    assert f"EMBEDDED_WORKER=false FLEET_NAME={fleet}" in status.stdout
    assert f"worker: running (pid {worker_pid}), metrics on http://127.0.0.1:{metrics_port}/metrics" in status.stdout
    assert "model ready -> yes" in status.stdout
    assert f"redis: answering on 127.0.0.1:{redis_port}" in status.stdout
    assert f"redis: pid {redis_pid} on port {redis_port} started by" in status.stdout

    run_one_frame_job(base)
    assert batch_frames_done(metrics_text(metrics_port)) == 1  # the worker worked it, not the API

    elsewhere = stack("up", {**untold, "PORT": str(free_port())})
    assert elsewhere.returncode != 0 and f"already running on {base}" in elsewhere.stderr
    other_metrics = stack("up", {**untold, "WORKER_METRICS_PORT": str(free_port())})
    assert other_metrics.returncode != 0
    assert f"worker already running with metrics on port {metrics_port}" in other_metrics.stderr
    assert pid_alive(api_pid) and pid_alive(worker_pid)

    restarted = stack("restart-web", untold, timeout=120)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not pid_alive(api_pid)
    api_pid = recorded_pid(run_dir / "api.pid")
    assert http_status(f"{base}/health/ready") == 200
    assert process_environment(api_pid)["FLEET_NAME"] == fleet
    assert pid_alive(worker_pid) and recorded_pid(run_dir / "worker.pid") == worker_pid  # its model stays loaded
    assert batch_frames_done(metrics_text(metrics_port)) == 1

    restarted = stack("restart-worker", untold, timeout=120)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert not pid_alive(worker_pid)
    worker_pid = recorded_pid(run_dir / "worker.pid")
    assert "\nhazard_model_ready 1.0" in metrics_text(metrics_port)  # a fresh process on the recorded port
    assert process_environment(worker_pid)["FLEET_NAME"] == fleet
    assert pid_alive(api_pid) and recorded_pid(run_dir / "api.pid") == api_pid
    assert http_status(f"{base}/health/ready") == 200

    down = stack("down", untold, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert wait_until(lambda: http_status(f"{base}/health/live") == 0)
    assert wait_until(lambda: not metrics_text(metrics_port))
    assert wait_until(lambda: not redis_answers(redis_port))
    assert not pid_alive(api_pid) and not pid_alive(worker_pid) and not pid_alive(redis_pid)
    assert not list(run_dir.iterdir())

    again = stack("down", untold)
    assert again.returncode == 0, again.stderr
    assert "api not running" in again.stdout and "worker not running" in again.stdout
