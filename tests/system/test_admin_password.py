"""`make run` without an operator password: the process generates one, logs it once, and that one logs in."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_process import RedisProcess
from tests.support.server import Server

UNSET = ("ADMIN_PASSWORD", "ADMIN_PASSWORD_HASH", "ADMIN_TOKEN", "ADMIN_SESSION_SECRET")


class ModuleServer(Server):
    # `python -m app` is `hazard-api` run from this checkout: uvicorn.run with the import string `app.main:app`.
    launcher = (sys.executable, "-m", "app")


@pytest.fixture
def server(redis_server: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    running = ModuleServer(redis_server.url, tmp_path, ENVIRONMENT="local")
    running.wait_ready()
    yield running
    running.stop()


def test_one_process_logs_one_generated_admin_password_and_it_logs_in(server: Server) -> None:
    generated = [line for line in server.log_lines() if line.get("event") == "admin_password_generated"]
    assert len(generated) == 1, generated
    password = generated[0]["password"]
    answer = httpx.get(f"{server.base_url}/admin/api/models", auth=(generated[0]["user"], password), timeout=10)
    assert answer.status_code == 200, answer.text
