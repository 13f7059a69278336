"""The Dockerfile builds the image the app needs: stages, user, port, health check, command, contents."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi import FastAPI

from app.settings import ENVIRONMENT_FIELDS
from tests.support.launcher import uvicorn_run_for
from tests.system.deploy.common import (
    APP_PORT,
    ROOT,
    dockerfile_env,
    dockerfile_stages,
    final_stage,
    instructions,
    serves,
)


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        assert instructions(stage, "FROM")[0].split()[0] == "python:3.11-slim"


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = instructions(final_stage(), "USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_image_exposes_the_app_port() -> None:
    assert instructions(final_stage(), "EXPOSE") == [str(APP_PORT)]


def test_image_healthcheck_asks_liveness_on_the_app_port(app: FastAPI) -> None:
    (healthcheck,) = instructions(final_stage(), "HEALTHCHECK")
    url = re.search(r"http://[^'\"\s]+", healthcheck)
    assert url, healthcheck
    parts = urlsplit(url.group(0))
    assert parts.path == "/health/live" and serves(app, "GET", parts.path)
    assert parts.port == APP_PORT
    assert "curl" not in healthcheck  # python:3.11-slim has no curl


def test_image_serves_one_uvicorn_worker_on_all_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's command on the app's port and every interface; what the launcher does for any command line
    (one worker, no access log, the graceful shutdown, bounded connections) is tests/unit/entrypoints/test_api.py's,
    and that `hazard-api` is that launcher is tests/system/test_package.py's."""
    (cmd,) = instructions(final_stage(), "CMD")
    argv = yaml.safe_load(cmd)  # the exec form is a JSON array
    assert argv[0] == "hazard-api"  # the installed console script, not a source checkout
    # What the script would hand uvicorn for the image's arguments.
    _, options = uvicorn_run_for(argv[1:], monkeypatch)
    assert options["host"] == "0.0.0.0"
    assert options["port"] == APP_PORT


def test_image_bakes_in_the_default_model_and_installs_the_app_wheel() -> None:
    builder, stage = dockerfile_stages()[0], final_stage()
    model_dir = ENVIRONMENT_FIELDS["MODEL_DIR"].default
    copies = [args.split() for args in instructions(stage, "COPY")]
    sources = {Path(parts[-2].rstrip("/")) for parts in copies if not parts[0].startswith("--")}
    assert model_dir in sources
    # The app runs as an installed package (its wheel carries app/assets), from the venv the builder filled.
    assert Path("app") not in sources
    assert ["--from=builder", "/opt/venv", "/opt/venv"] in copies
    builder_copies = {
        Path(source.rstrip("/")) for args in instructions(builder, "COPY") for source in args.split()[:-1]
    }
    assert {Path("app"), Path("pyproject.toml"), Path("README.md")} <= builder_copies  # README.md: [project].readme
    builder_runs = " ".join(instructions(builder, "RUN"))
    assert "pip wheel --no-deps" in builder_runs and "pip install --no-deps /build/dist/*.whl" in builder_runs
    (workdir,) = instructions(stage, "WORKDIR")
    assert dockerfile_env(stage).get("MODEL_DIR", str(model_dir)) in {str(model_dir), f"{workdir}/{model_dir}"}


def test_image_gets_runtime_dependencies_only() -> None:
    text = " ".join(args for stage in dockerfile_stages() for _, args in stage).lower()
    for forbidden in ("torch", "ultralytics", "[dev]", "[train]", "pip install -e", "pip install ."):
        assert forbidden not in text, forbidden
    # The builder installs the pinned closure of [project].dependencies (tests/system/test_package.py checks that the
    # lock is that closure), then the app's wheel without dependencies: neither may hold the training stack.
    builder_runs = instructions(dockerfile_stages()[0], "RUN")
    assert any("pip install -r requirements.lock" in run for run in builder_runs)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    for dependency in [*project["dependencies"], *pinned]:
        assert not re.match(r"(torch|torchvision|ultralytics|pytest|onnx)\b", dependency.lower()), dependency


def test_runtime_stage_installs_no_build_tools() -> None:
    runs = " ".join(instructions(final_stage(), "RUN")).lower()
    for tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert tool not in runs, tool


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".git", ".venv*", "build/", "var/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", ".env"):
        assert required in patterns, required
    for needed in ("app", "app/", "models", "models/", "pyproject.toml", "README.md", "requirements.lock", "*"):
        assert needed not in patterns, needed
