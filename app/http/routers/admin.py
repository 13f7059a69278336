"""The admin API: model versions and the fleet (reload a model, restart processes). Every route needs an operator
(Basic or Bearer); changes need the admin role and are recorded in the audit log with the operator's name."""

# No `from __future__ import annotations`: the routes' Annotated role dependency is local to the factory, and
# FastAPI can only resolve string annotations against module globals.
from typing import Annotated, Literal

from fastapi import APIRouter

from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.deps import operator_dependency, role_dependency
from app.http.schemas.models import (
    FleetOut,
    ModelActionResult,
    ModelsOverview,
    ReloadPublished,
    ReloadRequest,
    RestartPublished,
)
from app.services.core.errors import (
    AdminDisabled,
    FleetStateUnavailable,
    ModelActive,
    ModelLoadFailed,
    ModelMemoryLimit,
    ModelNotFound,
    ProcessNotFound,
    RoleRequired,
    TooManyLoginAttempts,
    Unauthorized,
)
from app.services.fleet.model_control import ModelControl
from app.services.identity.audit import AuditLog
from app.services.identity.operators import OperatorAuth
from app.services.identity.roles import Operator, Role

AUTH_ERRORS = (Unauthorized, TooManyLoginAttempts, AdminDisabled)
CHANGE_ERRORS = (*AUTH_ERRORS, RoleRequired)
MODEL_ERRORS = (*REQUEST_ERRORS, *CHANGE_ERRORS, ModelNotFound)
RESTART_ERRORS = (*REQUEST_ERRORS, *CHANGE_ERRORS, ProcessNotFound, FleetStateUnavailable)


def create_admin_router(
    auth: OperatorAuth, model_control: ModelControl, client_address: ClientAddress, audit: AuditLog
) -> APIRouter:
    """`client_address` resolves who a failed login counts against, as the control center's login form does."""
    operator = operator_dependency(auth, client_address)
    Admin = Annotated[Operator, role_dependency(operator, Role.ADMIN)]
    router = APIRouter(prefix="/admin/api", tags=["admin"], dependencies=[operator])

    @router.get("/models", responses=error_responses(*AUTH_ERRORS))
    async def admin_list_models() -> ModelsOverview:
        return ModelsOverview.model_validate(await model_control.overview())

    @router.post("/models/{name}/load", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_load_model(name: str, who: Admin) -> ModelActionResult:
        result = ModelActionResult.model_validate(await model_control.load(name))
        await audit.record(who.name, "model.loaded", name)
        return result

    @router.post("/models/{name}/unload", responses=error_responses(*MODEL_ERRORS, ModelActive))
    async def admin_unload_model(name: str, who: Admin) -> ModelActionResult:
        result = ModelActionResult.model_validate(await model_control.unload(name))
        await audit.record(who.name, "model.unloaded", name)
        return result

    @router.post("/models/{name}/activate", responses=error_responses(*MODEL_ERRORS, ModelLoadFailed, ModelMemoryLimit))
    async def admin_activate_model(name: str, who: Admin) -> ModelActionResult:
        result = ModelActionResult.model_validate(await model_control.activate(name))
        await audit.record(who.name, "model.activated", name)
        return result

    @router.get("/fleet", responses=error_responses(*AUTH_ERRORS, FleetStateUnavailable))
    async def admin_fleet() -> FleetOut:
        return FleetOut(processes=await model_control.fleet())

    @router.post("/fleet/reload", responses=error_responses(*JSON_BODY_ERRORS, *CHANGE_ERRORS, FleetStateUnavailable))
    async def admin_reload_worker(who: Admin, body: ReloadRequest | None = None) -> ReloadPublished:
        body = body or ReloadRequest()
        published = ReloadPublished.model_validate(await model_control.reload(body.process_id, body.model))
        details = {"model": body.model} if body.model else {}
        await audit.record(who.name, "fleet.reload", body.process_id or "*", details)
        return published

    @router.post("/fleet/{process_id}/restart", responses=error_responses(*RESTART_ERRORS))
    async def admin_restart_process(process_id: str, who: Admin) -> RestartPublished:
        """Drain one process like SIGTERM, then bring it back (re-executed, or started again by its supervisor)."""
        published = RestartPublished.model_validate(await model_control.restart(process_id=process_id))
        await audit.record(who.name, "fleet.restart", process_id)
        return published

    @router.post("/fleet/roles/{role}/restart", responses=error_responses(*RESTART_ERRORS))
    async def admin_restart_role(role: Literal["api", "worker"], who: Admin) -> RestartPublished:
        """Every running process of a role (`api`: the web API processes; `worker`): each drains and comes back."""
        published = RestartPublished.model_validate(await model_control.restart(role=role))
        await audit.record(who.name, "fleet.restart", f"role:{role}", {"processes": published.processes})
        return published

    return router
