"""Health reports: liveness, readiness and the deep check. Fields a check only has in one outcome (a reason when it
failed, a latency when it ran) are left out of the answer when they do not apply."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.services.core.serving import Phase
from app.services.registry.spatial import SpatialIndex


class LiveReport(BaseModel):
    status: Literal["alive"]


class ModelCheck(BaseModel):
    ok: bool
    name: str | None = None
    version: str | None = None
    precision: str | None = Field(None, description="What the model computes in on this replica: bf16, f32, ...")
    reason: str | None = None


class RedisCheck(BaseModel):
    ok: bool
    breaker: str = Field(description="closed, open or half-open")
    latency_ms: float | None = None
    reason: str | None = None


class RegistryCheck(BaseModel):
    """The hazard registry's database: down degrades the service (sightings kept and replayed), never unreadies it."""

    ok: bool
    kept: int = Field(description="Sightings kept while the database was down, waiting for replay.")
    queued: int = Field(description="Sightings and frames waiting for the registry's background writer.")
    spatial_index: SpatialIndex | None = Field(
        None,
        description="The hazards table's spatial index, once migrated: `postgis` (a geometry(Point, 4326) column "
        "with a GiST index, for GIS tools) or `lat_lon` (SQLite, or PostgreSQL without PostGIS).",
    )
    reason: str | None = None


class ReadyChecks(BaseModel):
    model: ModelCheck
    redis: RedisCheck
    registry: RegistryCheck | None = None


class ReadyReport(BaseModel):
    ready: bool
    phase: Phase
    degraded: bool = Field(
        description="Redis or the hazard registry is unreachable: frames are served in degraded mode, writes kept."
    )
    reasons: list[str] = Field(description="Why it is not ready; empty when it is.")
    checks: ReadyChecks


class InferenceCheck(BaseModel):
    ok: bool
    model: str | None = Field(None, description="The active version the probe frame ran on.")
    latency_ms: float | None = None
    expected_labels: list[str] | None = None
    found_labels: list[str] | None = None
    reason: str | None = None


class SpoolCheck(BaseModel):
    ok: bool = Field(description="The spool's disk took a probe write (a full or read-only disk does not).")
    latency_ms: float
    reason: str | None = None
    bytes: int | None = Field(None, description="Bytes of spooled frames.")


class DiskError(BaseModel):
    directory: Literal["spool", "storage"]
    reason: str
    at: float = Field(description="Unix time of the failed write.")


class StorageCheck(BaseModel):
    ok: bool = Field(description="The store is reachable (or writable) and so is the spool's disk.")
    store: Literal["local", "cloudinary"]
    latency_ms: float
    reason: str | None = None
    breaker: str
    queued: int = Field(description="Uploads waiting in memory.")
    spooled: int = Field(description="Uploads waiting on disk for a retry.")
    spool: SpoolCheck | None = None
    frames: int | None = Field(None, description="Local store: frames kept (bounded by LOCAL_STORAGE_MAX_MB/_AGE).")
    bytes: int | None = Field(None, description="Local store: their bytes.")
    disk_errors: dict[str, int] = Field(
        default_factory=dict, description="Writes refused by the disk since start, by directory (spool, storage)."
    )
    last_disk_error: DiskError | None = None


class DeepChecks(BaseModel):
    inference: InferenceCheck
    redis: RedisCheck
    storage: StorageCheck


class DeepReport(BaseModel):
    status: Literal["ok", "fail"]
    checks: DeepChecks
    age_seconds: float = Field(0.0, description="How old the report is: one run serves HEALTH_DEEP_CACHE_SECONDS.")
