"""The admin API: model versions and the fleet. Every route needs an operator (Basic or Bearer)."""

from __future__ import annotations

from fastapi import APIRouter

from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.deps import operator_dependency
from app.http.schemas.models import (
    FleetOut,
    ModelActionResult,
    ModelsOverview,
    ReloadPublished,
    ReloadRequest,
)
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


def create_admin_router(auth: OperatorAuth, model_control: ModelControl, client_address: ClientAddress) -> APIRouter:
    """`client_address` resolves who a failed login counts against, as the control center's login form does."""
    operator = operator_dependency(auth, client_address)
    router = APIRouter(prefix="/admin/api", tags=["admin"], dependencies=[operator])

    @router.get("/models", responses=error_responses(*AUTH_ERRORS))
    async def admin_list_models() -> ModelsOverview:
        return ModelsOverview.model_validate(await model_control.overview())

    @router.post("/models/{name}/load", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_load_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await model_control.load(name))

    @router.post("/models/{name}/unload", responses=error_responses(*MODEL_ERRORS, ModelActive))
    async def admin_unload_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await model_control.unload(name))

    @router.post("/models/{name}/activate", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_activate_model(name: str) -> ModelActionResult:
        return ModelActionResult.model_validate(await model_control.activate(name))

    @router.get("/fleet", responses=error_responses(*AUTH_ERRORS, FleetStateUnavailable))
    async def admin_fleet() -> FleetOut:
        return FleetOut(processes=await model_control.fleet())

    @router.post("/fleet/reload", responses=error_responses(*JSON_BODY_ERRORS, *AUTH_ERRORS, FleetStateUnavailable))
    async def admin_reload_worker(body: ReloadRequest | None = None) -> ReloadPublished:
        body = body or ReloadRequest()
        return ReloadPublished.model_validate(await model_control.reload(body.process_id, body.model))

    return router
