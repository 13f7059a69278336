"""The rules of the house are enforced, not only written: `lint-imports` (run by `make lint`) keeps the contracts of
pyproject.toml's [tool.importlinter] on this tree, and fails, naming the contract, on a copy that breaks one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
RUN_WITHIN_SECONDS = 30


def lint_imports(package_root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with this checkout's contracts on the `app` package under `package_root` (it imports from its
    working directory, so the copy, not this checkout, is the one analysed)."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", ROOT / "pyproject.toml"],
        cwd=package_root,
        capture_output=True,
        text=True,
        timeout=RUN_WITHIN_SECONDS,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "violation", "contract"),
    [
        ("app/services/core/leak.py", "import fastapi\n", "Services never import FastAPI, Starlette or app.http"),
        ("app/services/sessions/leak.py", "import app.http.errors\n", "Services never import FastAPI"),
        ("app/services/detection/leak.py", "import openvino\n", "OpenVINO is imported only by app.services.inference"),
        ("app/http/leak.py", "from openvino import Core\n", "OpenVINO is imported only by app.services.inference"),
        ("app/http/routers/leak.py", "from app.wiring.parts import Parts\n", "app.http never imports app.wiring"),
    ],
    ids=[
        "service-imports-fastapi",
        "service-imports-http",
        "detection-imports-openvino",
        "http-imports-openvino",
        "http-imports-wiring",
    ],
)
def test_a_violation_breaks_its_contract(tmp_path: Path, module: str, violation: str, contract: str) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    (tmp_path / module).write_text(violation)

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
