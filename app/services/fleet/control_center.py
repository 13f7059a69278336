"""What the control center shows and does, as plain data: the fleet's diagnostics, model control, jobs, sessions,
and this process's recent /detect latency. Pages are rendered from it by `app/http/control_center/`.

Every read degrades on its own: Redis down leaves the model panel (this process's registry) and the latency chart
working, and the diagnostics say which part could not be read instead of failing the whole refresh.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from app.services.core.errors import ApiError
from app.services.fleet.model_control import ROLES, ModelControl
from app.services.jobs.service import JobService
from app.services.observability.latency_window import LatencyWindow
from app.services.sessions.counting import ActiveSessions
from app.services.sessions.listing import SessionLister, SessionListing
from app.services.tracking.service import TrackingService
from app.services.tracking.types import HazardRecord

LATENCY_TARGET_MS = 150.0  # the service's P95 goal, drawn on the chart
# How the registry's states read on the page.
STATE_LABELS = {
    "available": "LOADED",
    "loading": "LOADING",
    "unloading": "UNLOADING",
    "unloaded": "UNLOADED",
    "failed": "FAILED",
}
MODEL_ACTIONS = ("load", "unload", "activate")
ROLE_TARGET = "role:"  # a restart's target naming a role rather than one process


@dataclass(frozen=True)
class Unavailable:
    """A part of a view that could not be read, and why (an error code and message)."""

    code: str
    message: str


def _unavailable(exc: ApiError) -> Unavailable:
    return Unavailable(exc.code, exc.message)


class ControlCenter:
    def __init__(
        self,
        control: ModelControl,
        jobs: JobService,
        active_sessions: ActiveSessions,
        lister: SessionLister,
        tracking: TrackingService,
        latency: LatencyWindow,
        *,
        process_id: str,
    ) -> None:
        self._control = control
        self._jobs = jobs
        self._active_sessions = active_sessions
        self._lister = lister
        self._tracking = tracking
        self._latency = latency
        self.process_id = process_id

    async def diagnostics(self) -> dict[str, Any]:
        """Every process's last heartbeat (running or lost), then fleet-wide: live sessions and queue depth."""
        view: dict[str, Any] = {"generated_at": time.time(), "this_process": self.process_id}
        try:
            processes = await self._control.fleet()
            view["processes"] = sorted(processes, key=lambda p: (p.get("status") != "running", p.get("role", "")))
        except ApiError as exc:
            view["processes"], view["fleet_error"] = [], _unavailable(exc)
        try:
            view["live_sessions"] = await self._active_sessions.count()
        except ApiError as exc:
            view["live_sessions"] = _unavailable(exc)
        try:
            view["queue"] = await self._jobs.queue_depth()
        except ApiError as exc:
            view["queue"] = _unavailable(exc)
        return view

    async def models(self) -> dict[str, Any]:
        """This process's versions (what its buttons act on), the fleet's desired state, and the processes a
        reload or a restart can target (running ones, per role, for the restart)."""
        overview = await self._control.overview()
        by_role = {
            role: sorted(i for i, p in overview["processes"].items() if p["role"] == role and p["status"] == "running")
            for role in ROLES
        }
        return {**overview, "process_ids": sorted(overview["processes"]), "by_role": by_role}

    async def act_on_model(self, action: str, name: str) -> dict[str, Any]:
        if action == "load":
            return await self._control.load(name)
        if action == "unload":
            return await self._control.unload(name)
        return await self._control.activate(name)

    async def reload(self, process_id: str | None, model: str | None) -> dict[str, Any]:
        return await self._control.reload(process_id, model)

    async def restart(self, target: str) -> dict[str, Any]:
        """`role:api` or `role:worker` (every running process of the role), else one process id."""
        role = target.removeprefix(ROLE_TARGET)
        if target.startswith(ROLE_TARGET) and role in ROLES:
            return await self._control.restart(role=role)
        return await self._control.restart(process_id=target)

    async def jobs(self, limit: int) -> list[dict[str, Any]]:
        return await self._jobs.recent(limit)

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self._jobs.cancel(job_id)

    async def live_sessions(self, limit: int) -> SessionListing:
        return await self._lister.live(limit)

    async def session_hazards(self, session_id: str) -> list[HazardRecord]:
        return await self._tracking.session_hazards(session_id)

    def latency(self) -> dict[str, Any]:
        series = self._latency.series()
        return {**asdict(series), "target_ms": LATENCY_TARGET_MS, "route": self._latency.route}
