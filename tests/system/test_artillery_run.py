"""artillery/smoke.yml with the real Artillery (pinned by artillery/package-lock.json, installed by
scripts/ensure-artillery.sh) against a real server in AUTH_MODE=keys, with a key made through the admin API whose
limits are the ones the scenario's header documents, passed as it says (HAZARD_API_KEY). The scenario runs as written
but for its length (a few seconds, not 30): its own `ensure` gates decide the exit code, and its report must show
every simulated camera's requests answered."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_process import RedisProcess
from tests.support.server import ROOT, Server

TOKEN = "artillery-test-operator-token-0123"
PEPPER = "artillery-test-pepper-" + "3" * 24
SMOKE = ROOT / "artillery" / "smoke.yml"
CAMERAS = 4  # the smoke phase's one new camera a second, for this many seconds
REQUESTS_PER_CAMERA = {"http.codes.201": 1, "http.codes.200": 6}  # create; 5 frames and the end
KEY_LIMITS = {"sessions_per_minute": 150, "frames_per_second": 50}  # the scenario header's key


@pytest.fixture(scope="module")
def artillery() -> str:
    """The artillery command: installed by the project's script when missing (a no-op once installed)."""
    script = ROOT / "scripts" / "ensure-artillery.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"AUTH_MODE": "keys", "API_KEY_PEPPER": PEPPER, "ADMIN_TOKEN": TOKEN}
    process = Server(redis_server.url, tmp_path_factory.mktemp("artillery-api"), **env)
    try:
        process.wait_ready(within=120)
        yield process
    finally:
        process.stop()


def smoke_key(server: Server) -> str:
    body = {"name": "artillery", "tenant": "load-test", "scopes": ["detect"], "limits": KEY_LIMITS}
    created = httpx.post(
        f"{server.base_url}/admin/api/keys", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_the_smoke_scenario_passes_its_own_gates(artillery: str, server: Server, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    phases = {"config": {"phases": [{"name": "smoke", "duration": CAMERAS, "arrivalRate": 1}]}}
    command = [artillery, "run", "--target", server.base_url, "--overrides", json.dumps(phases)]
    env = {**os.environ, "HAZARD_API_KEY": smoke_key(server), "ARTILLERY_DISABLE_TELEMETRY": "true"}
    run = subprocess.run(
        [*command, "--output", str(report), str(SMOKE)], env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counters = json.loads(report.read_text())["aggregate"]["counters"]
    assert counters["vusers.completed"] == CAMERAS
    assert {name: counters.get(name, 0) for name in REQUESTS_PER_CAMERA} == {
        name: CAMERAS * count for name, count in REQUESTS_PER_CAMERA.items()
    }
