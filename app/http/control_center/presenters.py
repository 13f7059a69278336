"""Service data as template context: the filters the templates use and what each view shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.services.core.errors import ApiError
from app.services.fleet.control_center import STATE_LABELS, ControlCenter
from app.services.identity.operator_sessions import OperatorSession

JOBS_SHOWN = 50
SESSIONS_SHOWN = 100


def when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (
        f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"
    )


def state_label(state: object) -> str:
    return STATE_LABELS.get(str(state), str(state).upper())


def page_context(session: OperatorSession, active: str, **context: Any) -> dict[str, Any]:
    """A full page's context: the CSRF token its htmx requests send, which page the nav marks, and who is signed in
    (the nav shows what their role may open)."""
    return {
        "csrf_token": session.csrf_token,
        "active_page": active,
        "operator_name": session.operator,
        "operator_role": session.role.value,
        **context,
    }


async def jobs_context(center: ControlCenter) -> dict[str, Any]:
    try:
        return {"jobs": await center.jobs(JOBS_SHOWN)}
    except ApiError as exc:  # the jobs panel says the queue is unavailable; the rest of the page still works
        return {"jobs": [], "unavailable": exc}


async def sessions_context(center: ControlCenter) -> dict[str, Any]:
    try:
        return {"listing": await center.live_sessions(SESSIONS_SHOWN)}
    except ApiError as exc:
        return {"listing": None, "unavailable": exc}
