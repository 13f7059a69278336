"""The full pages: dashboard, jobs and live sessions, each rendered with the CSRF token its htmx requests send."""

# No `from __future__ import annotations`: the routes' Annotated dependency is local to `add_pages`, and FastAPI can
# only resolve string annotations against module globals.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from app.http.control_center.presenters import jobs_context, page_context, sessions_context
from app.http.control_center.rendering import render
from app.services.fleet.control_center import ControlCenter
from app.services.identity.operator_sessions import OperatorSession


def add_pages(
    router: APIRouter, center: ControlCenter, operator: Callable[[Request], Awaitable[OperatorSession]]
) -> None:
    Operator = Annotated[OperatorSession, Depends(operator)]

    @router.get("")
    async def dashboard(request: Request, session: Operator) -> HTMLResponse:
        models = await center.models()
        context = page_context(session, "dashboard", models=models, diagnostics=await center.diagnostics())
        return render(request, "dashboard.html", context)

    @router.get("/jobs")
    async def jobs_page(request: Request, session: Operator) -> HTMLResponse:
        return render(request, "jobs.html", page_context(session, "jobs", **await jobs_context(center)))

    @router.get("/sessions")
    async def sessions_page(request: Request, session: Operator) -> HTMLResponse:
        return render(request, "sessions.html", page_context(session, "sessions", **await sessions_context(center)))
