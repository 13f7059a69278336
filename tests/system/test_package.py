"""The project as a package: its wheel carries what the service reads at run time, installs into a clean venv with
the pinned dependencies, and the installed `hazard-api` serves frames from there (nothing from this checkout)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import MODEL_DIR
from tests.support.redis_process import RedisProcess, free_port
from tests.support.server import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
FRAME = ROOT / "artillery" / "frames" / "road_1280x720.jpg"
BUILD_INPUTS = ("pyproject.toml", "README.md", "app")  # what the Dockerfile's builder copies to build the wheel
READY_WITHIN_SECONDS = 60
STOP_WITHIN_SECONDS = 30  # uvicorn's 10 s graceful shutdown plus the (shortened) drain and upload flush below


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def run(
    command: list[str | Path], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, built from a copy of the build inputs (no stale build/ of the checkout can leak into it), installed
    into a fresh venv (no system site-packages) against requirements.lock. Once per session: about 20 s warm."""
    base = tmp_path_factory.mktemp("package")
    source, dist, venv = base / "source", base / "dist", base / "venv"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, source], timeout=120)
    (wheel,) = dist.glob("hazard_detection_api-*.whl")
    run([sys.executable, "-m", "venv", venv], timeout=60)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--constraint", LOCK, wheel], timeout=150)
    run([venv / "bin" / "python", "-m", "pip", "check"], timeout=60)
    return Installed(wheel, venv)


def clean_env(installed: Installed, **values: str) -> dict[str, str]:
    """Not this process's environment: no PYTHONPATH, VIRTUAL_ENV or settings of the suite leak into the child."""
    env = {
        "PATH": f"{installed.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    env.update(values)
    return env


def test_wheel_carries_the_app_and_its_runtime_files_but_not_the_model(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        requires_python = re.search(r"^Requires-Python: (.+)$", wheel.read(metadata).decode(), re.MULTILINE)
    assert {"app/assets/probe.jpg", "app/assets/probe.json", "app/__main__.py", "app/main.py"} <= names
    # Every file of the package in the checkout (templates and static files to come included) is in the wheel.
    shipped = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
    }
    assert shipped <= names, shipped - names
    assert not [name for name in names if name.startswith(("models/", "tests/", "scripts/"))]
    assert re.search(r"^hazard-api = app\.entrypoints\.api:main$", scripts, re.MULTILINE), scripts
    assert requires_python and requires_python[1].strip() in {">=3.11,<3.14", "<3.14,>=3.11"}


def test_installed_package_imports_from_the_venv_and_explains_itself(installed: Installed, tmp_path: Path) -> None:
    env = clean_env(installed)
    where = run([installed.bin("python"), "-c", "import app; print(app.__file__)"], 30, cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout
    commands: list[list[str | Path]] = [
        [installed.bin("python"), "-m", "app", "--help"],
        [installed.bin("hazard-api"), "--help"],
    ]
    for command in commands:
        usage = run(command, 30, cwd=tmp_path, env=env).stdout
        assert "--host" in usage and "--port" in usage, usage


@pytest.fixture
def served(
    installed: Installed, redis_server: RedisProcess, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`hazard-api --port N` from the venv, in an empty directory, with the suite's Redis and the repo's model."""
    port = free_port()
    env = clean_env(
        installed,
        ENVIRONMENT="test",
        MODEL_DIR=str(MODEL_DIR),
        REDIS_URL=redis_server.url,
        STORAGE_DIR=str(tmp_path / "uploads"),
        SPOOL_DIR=str(tmp_path / "spool"),
        HOST="127.0.0.1",
        LOG_JSON="true",
        LOG_LEVEL="INFO",
        MODEL_WARMUP_REQUESTS="1",
        REQUEST_TIMEOUT_SECONDS="30",  # the first frames of a cold process may be slow on a busy machine
        SHUTDOWN_DRAIN_SECONDS="2",
        UPLOAD_FLUSH_SECONDS="1",
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [installed.bin("hazard-api"), "--port", str(port)], cwd=workdir, env=env, stdout=log, stderr=log
        )
        try:
            yield f"http://127.0.0.1:{port}", process, log_path
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_installed_console_script_serves_frames_and_stops_cleanly_on_sigterm(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base_url, process, log_path = served
    wait_until_ready(base_url, process, log_path, READY_WITHIN_SECONDS)

    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post("/sessions")
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        files = {"file": (FRAME.name, FRAME.read_bytes(), "image/jpeg")}
        answer = client.post(f"/detect/{session_id}", files=files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["session_id"] == session_id
    assert isinstance(body["detections"], list) and body["detections"], body  # the frame shows cones and debris
    assert all(0 <= detection["confidence"] <= 1 and detection["label"] for detection in body["detections"])
    assert body["image"] == {"width": 1280, "height": 720}

    process.send_signal(signal.SIGTERM)
    try:
        returncode = process.wait(timeout=STOP_WITHIN_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hazard-api did not stop within {STOP_WITHIN_SECONDS} s:\n{log_path.read_text()}")
    assert returncode == 0, log_path.read_text()
    events = [json.loads(line).get("event") for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert "shutdown_stats" in events  # the app's lifespan ran its drain, not only uvicorn


def test_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [line.strip() for line in LOCK.read_text(encoding="utf-8").splitlines()]
    assert lines[0].startswith("#") and any("make lock" in line for line in lines if line.startswith("#"))
    pins: dict[str, str] = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and version and not re.search(r"[\s;<>~!,]", version), f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    for dependency in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} is not in requirements.lock: run `make lock`"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {dependency}: `make lock`"
        assert any(s.operator == "<" for s in dependency.specifier), f"{dependency} has no upper bound"
        assert any(s.operator == ">=" for s in dependency.specifier), f"{dependency} has no lower bound"
    assert project["name"] not in pins


def test_console_scripts_run_the_entrypoints() -> None:
    """The image, the Kubernetes Deployments, compose and systemd run `hazard-api` and `hazard-worker` (tests/system/
    deploy): these are the launchers of app/entrypoints."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["hazard-api"] == "app.entrypoints.api:main"
    assert scripts["hazard-worker"] == "app.entrypoints.worker:main"
