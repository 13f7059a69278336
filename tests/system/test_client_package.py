"""The client as a distribution of its own: its wheel holds the whole package and the `hazard` script, depends on
what the client uses only, and imports nothing of the service (no OpenVINO, Redis, ...)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hazard_client"
SERVICE_MODULES = ("app", "openvino", "redis", "saq", "numpy", "PIL", "cloudinary", "fastapi", "structlog")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the folder, so no build/ or egg-info lands in the checkout."""
    base = tmp_path_factory.mktemp("client-package")
    source = base / "hazard_client"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "--wheel-dir",
        str(base / "dist"),
        str(source),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    (built,) = (base / "dist").glob("hazard_client-*.whl")
    return built


def test_the_wheel_holds_the_package_the_script_and_only_client_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        requires = [
            Requirement(line.split(":", 1)[1].strip())
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        scripts = archive.read(entry_points).decode()
    modules = {f"hazard_client/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.glob("**/*.py")}
    assert modules <= names, modules - names
    assert "hazard = hazard_client.cli:main" in scripts
    runtime = {requirement.name for requirement in requires if requirement.marker is None}
    assert runtime == {"httpx", "pydantic", "rich", "websockets", "av", "gpxpy", "pynmea2", "pillow"}


def test_the_installed_client_imports_nothing_of_the_service(wheel: Path, tmp_path: Path) -> None:
    # The wheel itself on the path (a wheel is importable as a zip): the package is complete without the checkout.
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    probe = (
        "import sys, hazard_client.cli, hazard_client.ingest; "
        "assert hazard_client.__file__.startswith(sys.argv[1]), hazard_client.__file__; "
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVICE_MODULES!r})); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", probe, str(wheel)], check=True, cwd=tmp_path, env=env, timeout=60)
    usage = subprocess.run(
        [sys.executable, "-m", "hazard_client", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert usage.returncode == 0 and "ingest" in usage.stdout and "Exit codes" in usage.stdout
