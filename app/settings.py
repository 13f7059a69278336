"""The one settings object. Every field reads the environment variable of the same name, upper-cased."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    log_level: str = "INFO"
    log_json: bool = True

    # Model and inference
    model_dir: Path = Path("models/best0408_openvino_model")
    model_device: str = "CPU"
    model_performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    model_warmup_requests: int = Field(3, ge=0)
    model_max_concurrent: int | None = Field(None, ge=1, description="infer requests; default: OpenVINO's optimum")
    model_inference_threads: int | None = Field(None, ge=1, description="CPU threads for OpenVINO; default: all cores")
    max_request_queue_size: int = Field(100, ge=1)
    request_timeout_seconds: float = Field(1.0, gt=0)  # a live frame older than this is no longer worth an answer
    default_confidence: float = Field(0.25, ge=0, le=1)
    default_iou: float = Field(0.45, ge=0, le=1)
    default_max_detections: int = Field(100, ge=1, le=1000)

    # Image limits
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)

    # Redis and sessions
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_socket_timeout_seconds: float = Field(0.5, gt=0)
    redis_max_connections: int = Field(64, ge=1)
    session_ttl_seconds: int = Field(3600, ge=1)
    session_max_ttl_seconds: int = Field(86400, ge=1)
    session_ended_grace_seconds: int = Field(300, ge=1)
    session_history_limit: int = Field(200, ge=1)
    session_rate_limit_per_second: float = Field(30.0, gt=0)
    session_rate_limit_burst: int = Field(60, ge=1)
    session_store_fail_open: bool = True
    pending_writes_limit: int = Field(10_000, ge=1)

    # Circuit breakers
    breaker_fail_max: int = Field(3, ge=1)
    breaker_reset_seconds: float = Field(5.0, gt=0)

    # Annotated uploads
    cloudinary_url: SecretStr | None = None
    cloudinary_timeout_seconds: float = Field(10.0, gt=0)
    storage_dir: Path = Path("var/uploads")
    spool_dir: Path = Path("var/spool")
    upload_min_confidence: float = Field(0.5, ge=0, le=1)
    upload_queue_size: int = Field(64, ge=1)
    # A camera at 15 fps sees the same pothole in many frames: one annotated upload per session per interval.
    upload_min_interval_seconds: float = Field(1.0, ge=0)
    upload_retry_base_seconds: float = Field(1.0, gt=0)
    upload_retry_max_seconds: float = Field(60.0, gt=0)
    # Most uploads kept on disk for retry; beyond it new failures are dropped (counted), old ones are kept.
    spool_max_files: int = Field(1000, ge=1)
    # At shutdown, how long queued uploads may still try to land before they are left in the spool.
    upload_flush_seconds: float = Field(5.0, ge=0)

    # Shutdown
    shutdown_drain_seconds: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.session_ttl_seconds > self.session_max_ttl_seconds:
            raise ValueError("SESSION_TTL_SECONDS must not exceed SESSION_MAX_TTL_SECONDS")
        if self.environment == "production" and "redis_url" not in self.model_fields_set:
            # The local default would make every replica keep sessions in a Redis of its own.
            raise ValueError("REDIS_URL must be set explicitly when ENVIRONMENT=production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
