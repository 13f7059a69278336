"""The systemd units of deploy/systemd run the launchers as a service user, write only where systemd lets them
and wait for the drain."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from app.settings import ENVIRONMENT_FIELDS
from tests.system.deploy.common import (
    DEPLOY,
    model_cache_dir,
    setting_names,
    shutdown_seconds,
    worker_shutdown_seconds,
    writable,
)

SYSTEMD_UNIT = DEPLOY / "systemd" / "hazard-api.service"
WORKER_UNIT = DEPLOY / "systemd" / "hazard-worker.service"
WORKER_ENV_EXAMPLE = DEPLOY / "systemd" / "hazard-worker.env.example"


class CaseSensitiveConfigParser(configparser.ConfigParser):
    """systemd keys are case-sensitive; ConfigParser lower-cases option names unless told otherwise."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    parser = CaseSensitiveConfigParser(strict=False, interpolation=None)
    parser.read(SYSTEMD_UNIT, encoding="utf-8")
    return parser


def test_systemd_unit_runs_the_launcher_from_a_venv_as_a_service_user(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").startswith("/")
    argv = shlex.split(service["ExecStart"])
    # hazard-api: one worker, the graceful shutdown and the connection bounds (test_image_serves_... checks them)
    assert argv[0].endswith("/bin/hazard-api") and "venv" in argv[0]
    assert argv[1:] == ["--host", "${HOST}", "--port", "${PORT}"]
    assert int(service["LimitNOFILE"]) >= ENVIRONMENT_FIELDS["HTTP_MAX_CONNECTIONS"].default + 256


def test_systemd_unit_writes_only_where_systemd_lets_it(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    if service.get("ProtectSystem") != "strict":
        pytest.skip("the file system is writable")
    env = unit_environment(SYSTEMD_UNIT)
    state = {f"/var/lib/{entry}" for entry in service.get("StateDirectory", "").split()}
    cache = {f"/var/cache/{entry}" for entry in service.get("CacheDirectory", "").split()}
    assert writable(env["STORAGE_DIR"], state) and writable(env["SPOOL_DIR"], state)
    assert writable(model_cache_dir(env, service["WorkingDirectory"]), state | cache)


def test_systemd_unit_restarts_on_failure_and_waits_for_the_drain(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > shutdown_seconds({})
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.fixture(scope="module")
def worker_unit() -> configparser.ConfigParser:
    parser = CaseSensitiveConfigParser(strict=False, interpolation=None)
    parser.read(WORKER_UNIT, encoding="utf-8")
    return parser


def unit_environment(path: Path) -> dict[str, str]:
    """Every Environment= assignment of a unit (ConfigParser keeps only the last of a repeated key)."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def env_example(path: Path) -> tuple[dict[str, str], set[str]]:
    """An env file's assignments, and every name it mentions (commented-out examples too)."""
    values: dict[str, str] = {}
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            names.add(match[2])
            if not match[1]:
                values[match[2]] = match[3]
    return values, names


def test_systemd_worker_unit_runs_hazard_worker_from_the_api_units_venv(
    worker_unit: configparser.ConfigParser, unit: configparser.ConfigParser
) -> None:
    service = worker_unit["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["WorkingDirectory"].startswith("/")
    assert service["EnvironmentFile"].lstrip("-").startswith("/")
    (program,) = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/hazard-worker") and "venv" in program
    assert program.rsplit("/bin/", 1)[0] == shlex.split(unit["Service"]["ExecStart"])[0].rsplit("/bin/", 1)[0]
    env = unit_environment(WORKER_UNIT)
    assert set(env) - {"PYTHONUNBUFFERED"} <= setting_names()
    # ProtectSystem=strict: what it writes lives in the directories systemd makes writable for it.
    state = {f"/var/lib/{entry}" for entry in service["StateDirectory"].split()}
    assert {env["STORAGE_DIR"], env["SPOOL_DIR"]} <= state
    assert env["MODEL_CACHE_DIR"] in {f"/var/cache/{entry}" for entry in service["CacheDirectory"].split()}


def test_systemd_worker_unit_waits_for_the_frames_in_hand(worker_unit: configparser.ConfigParser) -> None:
    service = worker_unit["Service"]
    values, _ = env_example(WORKER_ENV_EXAMPLE)
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > worker_shutdown_seconds({**unit_environment(WORKER_UNIT), **values})
    assert worker_unit["Install"]["WantedBy"] == "multi-user.target"
    # No client connections, but Redis pools, one connection per queue consumer, OpenVINO, logs: above the
    # usual soft limit (1024) with room to spare.
    needed = sum(
        int(ENVIRONMENT_FIELDS[name].default)
        for name in ("REDIS_MAX_CONNECTIONS", "WORKER_BATCH_CONCURRENCY", "WORKER_LIVE_CONCURRENCY")
    )
    assert int(service["LimitNOFILE"]) >= max(1024, 4 * (needed + 256))


def test_systemd_worker_env_example_names_settings_and_holds_placeholders(
    worker_unit: configparser.ConfigParser,
) -> None:
    values, names = env_example(WORKER_ENV_EXAMPLE)
    assert names <= setting_names(), names - setting_names()
    assert {"REDIS_URL", "FLEET_NAME"} <= set(values)  # the queue the web tier uses
    assert "CHANGE_ME" in values["REDIS_URL"]
    port = values.get("WORKER_METRICS_PORT", unit_environment(WORKER_UNIT).get("WORKER_METRICS_PORT"))
    assert port and int(port) > 0  # a worker without metrics would be invisible


def test_systemd_api_env_example_sets_the_key_pepper_and_names_settings() -> None:
    values, names = env_example(DEPLOY / "systemd" / "hazard-api.env.example")
    assert "CHANGE_ME" in values["API_KEY_PEPPER"], "a placeholder, required in production"
    assert {"ADMIN_TOKEN", "METRICS_TOKEN"} <= names
    assert names - {"HOST"} <= setting_names(), names - setting_names()  # HOST: the launcher's
