"""Operator actions on models: done here first (so a broken version is refused with its reason), then
written to the fleet's desired state so every other process converges to the same thing. Also the commands to the
fleet's processes: reload a model, restart (app/services/fleet/restart.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from app.services.core.errors import FleetStateUnavailable, ModelLoadFailed, ProcessNotFound
from app.services.core.redis_client import REDIS_FAILURES
from app.services.fleet.agent import DesiredChange, FleetControl
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import ModelLoadError

log = structlog.get_logger(__name__)

ROLES = ("api", "worker")


class ModelControl:
    def __init__(self, registry: ModelRegistry, fleet: FleetControl, *, local: bool = True) -> None:
        self._registry = registry
        self._fleet = fleet
        self._local = local  # False: this process holds no model (remote mode); the fleet's workers act

    async def overview(self) -> dict[str, Any]:
        try:
            desired = await self._fleet.desired()
            processes = await self._fleet.processes()
        except REDIS_FAILURES:
            desired, processes = None, []
        per_process = {
            p["process_id"]: {
                "status": p["status"],
                "role": p.get("role"),
                "active": p.get("active_model"),
                "models": {m["name"]: m["state"] for m in p.get("models", [])},
            }
            for p in processes
        }
        return {
            "active": self._registry.active,
            "desired": None
            if desired is None
            else {"active": desired.active, "loaded": sorted(desired.loaded), "generation": desired.generation},
            "versions": self._registry.describe(),
            "processes": per_process,
        }

    async def load(self, name: str) -> dict[str, Any]:
        await self._locally(self._registry.load, name)
        return await self._publish("load", name)

    async def unload(self, name: str) -> dict[str, Any]:
        if self._local:
            await self._registry.unload(name)  # refuses the active version (409) before anything is written
        return await self._publish("unload", name)

    async def activate(self, name: str) -> dict[str, Any]:
        await self._locally(self._registry.activate, name)
        return await self._publish("activate", name)

    async def fleet(self) -> list[dict[str, Any]]:
        try:
            return await self._fleet.processes()
        except REDIS_FAILURES as exc:
            raise FleetStateUnavailable(retry_after=1, details={"reason": type(exc).__name__}) from exc

    async def reload(self, process_id: str | None, model: str | None) -> dict[str, Any]:
        fields = {"target": process_id or "*", **({"model": model} if model else {})}
        await self._command("reload", fields)
        return {"published": "reload", **fields}

    async def restart(self, *, process_id: str | None = None, role: str | None = None) -> dict[str, Any]:
        """Restart one running process (by id), or every running process of a role: each drains like SIGTERM and
        comes back. 404 when no running process matches (a typo, or one already gone)."""
        key, value = ("process_id", process_id) if process_id else ("role", role)
        chosen = sorted(p["process_id"] for p in await self.fleet() if p["status"] == "running" and p.get(key) == value)
        if not chosen:
            raise ProcessNotFound(details={"process_id": process_id} if process_id else {"role": role})
        fields = {"target": process_id or "*", **({"role": role} if role else {})}
        await self._command("restart", fields)
        return {"published": "restart", **fields, "processes": chosen}

    async def _command(self, op: str, fields: dict[str, str]) -> None:
        try:
            await self._fleet.publish(op, **fields)
        except REDIS_FAILURES as exc:
            raise FleetStateUnavailable(retry_after=1, details={"reason": type(exc).__name__}) from exc

    async def _locally(self, action: Callable[[str], Awaitable[object]], name: str) -> None:
        if not self._local:
            self._registry.version(name)  # 404 for a version the repository does not hold
            return
        try:
            await action(name)
        except ModelLoadError as exc:
            raise ModelLoadFailed(str(exc), details={"model": name}) from exc

    async def _publish(self, change: DesiredChange, name: str) -> dict[str, Any]:
        """Record the change as the fleet's desired state; while Redis is down only this process has changed."""
        version = self._registry.version(name).describe(self._registry.active)
        try:
            written = await self._fleet.change_desired(change, name, self._registry.active or name)
        except REDIS_FAILURES as exc:
            log.warning("fleet_desired_state_not_written", model=name, error=type(exc).__name__)
            return {"model": version, "fleet": {"synced": False}}
        return {"model": version, "fleet": {"synced": True, "generation": written.generation}}
