"""The htmx fragments the pages refresh and post to (models, fleet reload and restart, jobs, live sessions), and the
latency series the dashboard's chart reads."""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to the `add_*` functions,
# and FastAPI can only resolve string annotations against module globals.
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from app.http.control_center.presenters import jobs_context, sessions_context
from app.http.control_center.rendering import render
from app.http.routers.hazards import signed_records
from app.services.core.errors import ApiError, ValidationFailed
from app.services.fleet.control_center import MODEL_ACTIONS, ControlCenter
from app.services.identity.audit import AuditLog
from app.services.identity.operator_sessions import OperatorSession
from app.services.uploads.signing import MediaSigner

OperatorCheck = Callable[[Request], Awaitable[OperatorSession]]
# The audit log's names for the model actions (past tense, as the admin API records them).
MODEL_ACTION_RECORDS = {"load": "model.loaded", "unload": "model.unloaded", "activate": "model.activated"}


async def outcome(action: Awaitable[object], done: str, failed: str) -> tuple[dict[str, Any], int]:
    """An operator's action as the panel's flash message and the fragment's status: a refusal is shown in the panel,
    beside what it acted on, not as an error page."""
    try:
        await action
    except ApiError as exc:
        return {"error": exc, "message": failed}, exc.status
    return {"message": done}, 200


def add_fragments(
    router: APIRouter,
    center: ControlCenter,
    audit: AuditLog,
    checks: tuple[OperatorCheck, OperatorCheck],
    media_urls: MediaSigner,
) -> None:
    """`checks`: the operator's login, and the guard of every action (the caller passes one that also requires the
    admin role). `media_urls`: the frames shown are at signed URLs (AUTH_MODE=keys), as the API hands them out."""
    operator, checked_post = checks
    add_model_fragments(router, center, audit, operator, checked_post)
    add_job_fragments(router, center, audit, operator, checked_post)
    add_session_fragments(router, center, operator, media_urls)


def add_model_fragments(
    router: APIRouter, center: ControlCenter, audit: AuditLog, operator: OperatorCheck, checked_post: OperatorCheck
) -> None:
    Operator = Annotated[OperatorSession, Depends(operator)]
    CheckedPost = Annotated[OperatorSession, Depends(checked_post)]

    @router.get("/partials/diagnostics")
    async def diagnostics(request: Request, _: Operator) -> HTMLResponse:
        return render(request, "partials/diagnostics.html", {"diagnostics": await center.diagnostics()})

    @router.get("/partials/models")
    async def models(request: Request, session: Operator) -> HTMLResponse:
        context = {"models": await center.models(), "csrf_token": session.csrf_token}
        return render(request, "partials/models.html", context)

    @router.post("/models/{name}/{action}")
    async def act_on_model(request: Request, name: str, action: str, session: CheckedPost) -> HTMLResponse:
        if action not in MODEL_ACTIONS:
            raise ValidationFailed("No such model action.", details={"action": action, "accepted": MODEL_ACTIONS})
        done, failed = f"{action.capitalize()} {name}: done.", f"{action.capitalize()} {name} failed"
        flash, status = await outcome(center.act_on_model(action, name), done, failed)
        if status == 200:
            await audit.record(session.operator, MODEL_ACTION_RECORDS[action], name)
        context = {"models": await center.models(), "csrf_token": session.csrf_token, "flash": flash}
        return render(request, "partials/models.html", context, status)

    @router.post("/fleet/reload")
    async def reload_worker(request: Request, session: CheckedPost) -> HTMLResponse:
        target = (await request.form()).get("process_id")
        process_id = target if isinstance(target, str) and target not in ("", "*") else None
        done = f"Reload sent to {process_id or 'every process'}."
        flash, status = await outcome(center.reload(process_id, None), done, "Reload failed")
        if status == 200:
            await audit.record(session.operator, "fleet.reload", process_id or "*")
        return render(request, "partials/reload.html", {"flash": flash}, status)

    @router.post("/fleet/restart")
    async def restart_processes(request: Request, session: CheckedPost) -> HTMLResponse:
        """`target`: one process id, or `role:api` / `role:worker`; the page shows them go and come back."""
        target = (await request.form()).get("target")
        if not isinstance(target, str) or not target:
            raise ValidationFailed("Name a process or a role to restart.", details={"field": "target"})
        addressed = f"every {target.removeprefix('role:')} process" if target.startswith("role:") else target
        done = f"Restart sent to {addressed}: it drains, then comes back."
        flash, status = await outcome(center.restart(target), done, "Restart failed")
        if status == 200:
            await audit.record(session.operator, "fleet.restart", target)
        return render(request, "partials/reload.html", {"flash": flash}, status)


def add_job_fragments(
    router: APIRouter, center: ControlCenter, audit: AuditLog, operator: OperatorCheck, checked_post: OperatorCheck
) -> None:
    Operator = Annotated[OperatorSession, Depends(operator)]
    CheckedPost = Annotated[OperatorSession, Depends(checked_post)]

    @router.get("/partials/jobs")
    async def jobs(request: Request, session: Operator) -> HTMLResponse:
        context = {"csrf_token": session.csrf_token, **await jobs_context(center)}
        return render(request, "partials/jobs.html", context)

    @router.post("/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str, session: CheckedPost) -> HTMLResponse:
        done, failed = f"Job {job_id} cancelled.", f"Cancelling {job_id} failed"
        flash, status = await outcome(center.cancel_job(job_id), done, failed)
        if status == 200:
            await audit.record(session.operator, "job.cancelled", job_id)
        context = {"csrf_token": session.csrf_token, "flash": flash, **await jobs_context(center)}
        return render(request, "partials/jobs.html", context, status)


def add_session_fragments(
    router: APIRouter, center: ControlCenter, operator: OperatorCheck, media_urls: MediaSigner
) -> None:
    Operator = Annotated[OperatorSession, Depends(operator)]

    @router.get("/partials/sessions")
    async def live_sessions(request: Request, _: Operator) -> HTMLResponse:
        return render(request, "partials/sessions.html", await sessions_context(center))

    @router.get("/partials/sessions/{session_id}/hazards")
    async def session_hazards(request: Request, session_id: str, _: Operator) -> HTMLResponse:
        hazards = signed_records(await center.session_hazards(session_id), media_urls)
        return render(request, "partials/hazards.html", {"session_id": session_id, "hazards": hazards})

    @router.get("/latency.json")
    async def latency(_: Operator) -> JSONResponse:
        return JSONResponse(center.latency())
