"""The admin API's bodies: model versions, their states per process, and the fleet."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ReloadRequest(BaseModel):
    process_id: str | None = Field(None, max_length=256, description="One process; every process when absent.")
    model: str | None = Field(None, max_length=128, description="The process's active version when absent.")


class ModelVersionOut(BaseModel):
    name: str
    state: str = Field(description="unloaded, loading, available, unloading or failed")
    active: bool
    reason: str | None
    version: str | None
    input_size: str | None
    load_seconds: float | None = Field(description="Compile, warm-up and probe frame, in all.")
    compile_seconds: float | None = Field(description="Reading and compiling the IR (the compile cache shortens it).")
    loaded_mb: float | None
    estimated_mb: float
    pool: dict[str, int] | None


class ProcessModels(BaseModel):
    status: str = Field(description="running or lost")
    role: str | None = Field(None, description="api or worker")
    active: str | None
    models: dict[str, str] = Field(description="version -> state")


class ModelsOverview(BaseModel):
    active: str | None
    desired: dict[str, Any] | None = Field(description="The fleet's desired state in Redis (null when unreachable).")
    versions: list[ModelVersionOut]
    processes: dict[str, ProcessModels] = Field(description="Per process id: its versions' states.")


class ModelActionResult(BaseModel):
    model: ModelVersionOut
    fleet: dict[str, Any] = Field(description="`synced`: the desired state was written for the fleet to follow.")


class FleetOut(BaseModel):
    processes: list[dict[str, Any]] = Field(description="Heartbeats of every process, `running` or `lost`.")


class RestartPublished(BaseModel):
    published: Literal["restart"]
    target: str = Field(description="The process id, or `*` for every process of `role`.")
    role: str | None = None
    processes: list[str] = Field(description="The running processes addressed: each drains, then comes back.")


class ReloadPublished(BaseModel):
    published: str
    target: str
    model: str | None = None
