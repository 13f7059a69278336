"""The one settings object: environment names, defaults that work locally, refusals that protect production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_defaults_work_locally_without_any_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.max_request_queue_size == 100 and settings.session_ttl_seconds == 3600


def test_fields_read_their_upper_case_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_WARMUP_REQUESTS", "7")
    monkeypatch.setenv("CLOUDINARY_URL", "cloudinary://key:s3cret@demo")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model_warmup_requests == 7
    assert settings.cloudinary_url is not None and "s3cret" not in repr(settings)


def test_production_refuses_the_local_redis_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="REDIS_URL must be set"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("REDIS_URL", "redis://sessions:6379/0")
    assert Settings(_env_file=None).redis_url == "redis://sessions:6379/0"  # type: ignore[call-arg]


def test_default_ttl_cannot_exceed_the_maximum() -> None:
    with pytest.raises(ValidationError, match="SESSION_TTL_SECONDS"):
        Settings(session_ttl_seconds=100, session_max_ttl_seconds=10, _env_file=None)  # type: ignore[call-arg]
