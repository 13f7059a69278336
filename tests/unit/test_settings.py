"""The one settings object: environment names, defaults that work locally, refusals that protect production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.services.core.redis_client import redact_url
from app.settings import Settings, SettingsError, load_settings
from tests.support.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]
LEVELS = "DEBUG, INFO, WARNING, ERROR, CRITICAL"


def test_defaults_work_locally_without_any_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.detection.queue_size == 100 and settings.sessions.ttl_seconds == 3600


def test_fields_read_their_upper_case_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_WARMUP_REQUESTS", "7")
    monkeypatch.setenv("CLOUDINARY_URL", "cloudinary://key:s3cret@demo")
    settings = Settings(_env_file=None)
    assert settings.model.warmup_requests == 7
    assert settings.uploads.cloudinary_url is not None and "s3cret" not in repr(settings)


PEPPER = "p" * 32


def test_production_refuses_the_local_redis_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEY_PEPPER", PEPPER)
    with pytest.raises(ValidationError, match="REDIS_URL must be set"):
        Settings(_env_file=None)
    monkeypatch.setenv("REDIS_URL", "redis://sessions:6379/0")
    assert Settings(_env_file=None).redis.url == "redis://sessions:6379/0"


def test_default_ttl_cannot_exceed_the_maximum() -> None:
    with pytest.raises(ValidationError, match="SESSION_TTL_SECONDS"):
        Settings(session_ttl_seconds=100, session_max_ttl_seconds=10, _env_file=None)


@pytest.mark.parametrize("given", ["debug", "Warning", " error ", "CRITICAL"])
def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", given)
    assert Settings(_env_file=None).telemetry.log_level == given.strip().upper()


def test_load_settings_names_every_bad_variable_on_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file there: only the environment counts
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    monkeypatch.setenv("REQUEST_TIMEOUT_SECONDS", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).splitlines() == [
        f"configuration error: LOG_LEVEL='verbose' is not one of {LEVELS}",
        "configuration error: REQUEST_TIMEOUT_SECONDS='abc' is not valid: input should be a valid number, "
        "unable to parse string as a number",
    ]


def test_load_settings_keeps_the_message_of_a_cross_field_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file there: only the environment counts
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == "configuration error: REDIS_URL must be set explicitly when ENVIRONMENT=production"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LOG_LEVEL", "verbose", f"LOG_LEVEL='verbose' is not one of {LEVELS}"),
        (
            "REQUEST_TIMEOUT_SECONDS",
            "abc",
            "REQUEST_TIMEOUT_SECONDS='abc' is not valid: input should be a valid number",
        ),
    ],
)
def test_server_with_a_bad_setting_exits_with_one_line_and_no_traceback(
    variable: str, value: str, expected: str
) -> None:
    environment = {**os.environ, variable: value}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(free_port())]
    # A server that starts anyway never exits by itself: the timeout turns that into a failure.
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {expected}"), done.stderr


def test_logged_redis_urls_hide_every_credential_even_with_an_at_sign_in_the_password() -> None:
    assert redact_url("redis://user:p@ss@word@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_groups_read_the_flat_variables_of_the_environment_and_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SESSION_TTL_SECONDS=77\nFLEET_NAME=from-dotenv\nlog_level=debug\n")
    monkeypatch.setenv("FLEET_NAME", "from-environment")  # the environment wins over the file
    monkeypatch.setenv("track_min_hits", "9")  # names are not case-sensitive
    settings = Settings()
    assert settings.sessions.ttl_seconds == 77 and settings.telemetry.log_level == "DEBUG"
    assert settings.fleet.name == "from-environment" and settings.tracking.min_hits == 9
    assert Settings(_env_file=None).sessions.ttl_seconds == 3600


def test_flat_arguments_go_to_their_group_and_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_TTL_SECONDS", "99")
    monkeypatch.setenv("SESSION_HISTORY_LIMIT", "7")
    settings = Settings(session_ttl_seconds=5, upload_per_hazard=False, environment="test", _env_file=None)
    assert settings.sessions.ttl_seconds == 5 and settings.sessions.history_limit == 7
    assert settings.uploads.per_hazard is False and settings.environment == "test"
    grouped = Settings(sessions={"ttl_seconds": 6}, session_history_limit=8, _env_file=None)
    assert (grouped.sessions.ttl_seconds, grouped.sessions.history_limit) == (6, 8)


def test_production_accepts_a_redis_url_given_as_an_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = Settings(
        environment="production", redis_url="redis://sessions:6379/0", api_key_pepper=PEPPER, _env_file=None
    )
    assert settings.redis.url == settings.queue_url == "redis://sessions:6379/0"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            {"SESSION_TTL_SECONDS": "100", "SESSION_MAX_TTL_SECONDS": "10"},
            "SESSION_TTL_SECONDS must not exceed SESSION_MAX_TTL_SECONDS",
        ),
        ({"REDIS_MODE": "cluster"}, "QUEUE_REDIS_URL must name a standalone Redis when REDIS_MODE=cluster"),
        (
            {"UPLOAD_SETTLE_SECONDS": "12"},
            "UPLOAD_SETTLE_SECONDS must exceed CLOUDINARY_TIMEOUT_SECONDS by at least 5 s",
        ),
        (
            {"MODEL_PERFORMANCE_HINT": "fast"},
            "MODEL_PERFORMANCE_HINT='fast' is not one of LATENCY, THROUGHPUT, ADAPTIVE",
        ),
        ({"FLEET_NAME": "a b"}, "FLEET_NAME='a b' is not valid: string should match pattern"),
        ({"QUEUE_REDIS_URL": "x", "WORKER_METRICS_PORT": "-1"}, "WORKER_METRICS_PORT='-1' is not valid: input should"),
    ],
)
def test_load_settings_names_the_variable_of_a_grouped_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: dict[str, str], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"configuration error: {expected}")


def test_keys_are_required_by_default_in_production_and_off_elsewhere() -> None:
    assert Settings(_env_file=None).auth_mode == "off"
    assert Settings(environment="test", _env_file=None).auth_mode == "off"
    production = Settings(environment="production", redis_url="redis://r:6379/0", api_key_pepper=PEPPER, _env_file=None)
    assert production.auth_mode == "keys"
    assert Settings(auth_mode="keys", _env_file=None).auth_mode == "keys"


def test_production_needs_a_pepper_for_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY_PEPPER", raising=False)
    with pytest.raises(ValidationError, match="API_KEY_PEPPER must be set when ENVIRONMENT=production"):
        Settings(environment="production", redis_url="redis://r:6379/0", _env_file=None)


def test_production_refuses_auth_off_unless_explicitly_allowed() -> None:
    with pytest.raises(ValidationError, match="AUTH_MODE=off in production needs AUTH_ALLOW_OFF_IN_PRODUCTION=true"):
        Settings(environment="production", redis_url="redis://r:6379/0", auth_mode="off", _env_file=None)
    allowed = Settings(
        environment="production",
        redis_url="redis://r:6379/0",
        auth_mode="off",
        auth_allow_off_in_production=True,
        _env_file=None,
    )
    assert allowed.auth_mode == "off"


def test_the_pepper_never_shows_in_an_error_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEY_PEPPER", "too-short-but-secret")
    monkeypatch.setenv("API_KEY_CACHE_SECONDS", "not-a-number")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "API_KEY_CACHE_SECONDS" in str(caught.value) and "too-short-but-secret" not in str(caught.value)
