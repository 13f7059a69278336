"""The admin API: model versions and the fleet. Every route needs an operator (Basic or Bearer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.deps import operator_dependency
from app.services.core.errors import (
    AdminDisabled,
    FleetStateUnavailable,
    ModelActive,
    ModelLoadFailed,
    ModelMemoryLimit,
    ModelNotFound,
    TooManyLoginAttempts,
    Unauthorized,
)
from app.services.fleet.model_control import ModelControl
from app.services.identity.operators import OperatorAuth

AUTH_ERRORS = (Unauthorized, TooManyLoginAttempts, AdminDisabled)
MODEL_ERRORS = (*REQUEST_ERRORS, *AUTH_ERRORS, ModelNotFound)


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


class ReloadPublished(BaseModel):
    published: str
    target: str
    model: str | None = None


def create_admin_router(auth: OperatorAuth, control: ModelControl) -> APIRouter:
    router = APIRouter(prefix="/admin/api", tags=["admin"], dependencies=[operator_dependency(auth)])

    @router.get("/models", responses=error_responses(*AUTH_ERRORS))
    async def admin_list_models() -> ModelsOverview:
        return ModelsOverview.model_validate(await control.overview())

    @router.post("/models/{name}/load", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_load_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await control.load(name))

    @router.post("/models/{name}/unload", responses=error_responses(*MODEL_ERRORS, ModelActive))
    async def admin_unload_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await control.unload(name))

    @router.post("/models/{name}/activate", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_activate_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await control.activate(name))

    @router.get("/fleet", responses=error_responses(*AUTH_ERRORS, FleetStateUnavailable))
    async def admin_fleet() -> FleetOut:
        return FleetOut(processes=await control.fleet())

    @router.post("/fleet/reload", responses=error_responses(*JSON_BODY_ERRORS, *AUTH_ERRORS, FleetStateUnavailable))
    async def admin_reload_worker(body: ReloadRequest | None = None) -> ReloadPublished:
        body = body or ReloadRequest()
        return ReloadPublished.model_validate(await control.reload(body.process_id, body.model))

    return router
