"""The fleet through Redis: heartbeats of every model-holding process, the desired model state, control commands.

Keys, all under the hash tag of the fleet's name (FLEET_NAME, so deployments can share a Redis), and each
command touches one key, so Redis Cluster serves them like one server:
- `fleet:{<name>}:process:<id>` hash: the last heartbeat of one process, expiring after PROCESS_KEY_TTL_SECONDS;
- `fleet:{<name>}:processes` zset: process id -> time of its last heartbeat (trimmed by the processes);
- `fleet:{<name>}:desired` hash: `active`, `loaded` (JSON list), `generation`, `updated_at`;
- `fleet:{<name>}:commands` stream: `converge` (the desired state changed), `reload` (re-read a model), `restart`
  (drain and come back: app/services/fleet/restart.py); each for `target` (one process id, or `*`) and, when
  given, only the processes of one `role`.
A process reads the desired state first when it starts, converges after each command, and re-checks the
generation with every heartbeat, so a change made while it could not reach Redis is applied when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import structlog
from redis.typing import EncodableT, FieldT

from app.services.core.asyncio_tasks import cancel_all
from app.services.core.redis_client import REDIS_FAILURES, register_script
from app.services.core.types import RedisClient
from app.services.fleet.restart import ProcessRestart
from app.services.inference.registry import ModelRegistry, ModelState

log = structlog.get_logger(__name__)

COMMANDS_MAXLEN = 1000
PROCESS_KEY_TTL_SECONDS = 600  # a lost process stays visible (as lost) this long
LOST_AFTER_HEARTBEATS = 3

Describe = Callable[[], dict[str, Any]]
# What an operator's action does to the desired state: load (wanted too), unload (no longer wanted), activate.
DesiredChange = Literal["load", "unload", "activate"]

# KEYS[1] the desired hash; ARGV: the change, its model, the active version when none is set yet, now.
# -> {generation, active, loaded as a JSON list}
CHANGE_DESIRED = """
local active = redis.call('HGET', KEYS[1], 'active') or ARGV[3]
local loaded = {}
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'loaded') or '[]')) do loaded[name] = true end
if ARGV[1] == 'load' then
  loaded[ARGV[2]] = true
elseif ARGV[1] == 'unload' then
  loaded[ARGV[2]] = nil
else
  active = ARGV[2]
  loaded[ARGV[2]] = nil
end
local names = {}
for name in pairs(loaded) do names[#names + 1] = name end
table.sort(names)
local encoded = '[]'  -- cjson writes an empty table as {}
if #names > 0 then encoded = cjson.encode(names) end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'active', active, 'loaded', encoded, 'updated_at', ARGV[4])
return {generation, active, encoded}
"""


@dataclass(frozen=True)
class FleetKeys:
    name: str

    @property
    def processes(self) -> str:
        return f"fleet:{{{self.name}}}:processes"

    @property
    def desired(self) -> str:
        return f"fleet:{{{self.name}}}:desired"

    @property
    def commands(self) -> str:
        return f"fleet:{{{self.name}}}:commands"

    def process(self, process_id: str) -> str:
        return f"fleet:{{{self.name}}}:process:{process_id}"


def new_process_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class DesiredState:
    active: str
    loaded: frozenset[str]
    generation: int

    @property
    def wanted(self) -> frozenset[str]:
        return self.loaded | {self.active}


class FleetControl:
    """Reads and writes the fleet's shared state; used by the admin API of any process."""

    def __init__(self, redis: RedisClient, fleet_name: str, heartbeat_seconds: float) -> None:
        self.redis = redis
        self.keys = FleetKeys(fleet_name)
        self._heartbeat_seconds = heartbeat_seconds
        self._change = register_script(redis, CHANGE_DESIRED)

    async def desired(self) -> DesiredState | None:
        fields = await cast(Awaitable[dict[str, str]], self.redis.hgetall(self.keys.desired))
        if not fields.get("active"):
            return None
        return DesiredState(
            fields["active"], frozenset(json.loads(fields.get("loaded", "[]"))), int(fields.get("generation", 0))
        )

    async def change_desired(self, change: DesiredChange, model: str, active_when_unset: str) -> DesiredState:
        """Apply one operator's change to the desired state and give it a new generation, in one script (one key:
        cluster-safe). Read and written apart, two operators' changes at once would keep only one of them, and an
        agent could read a new generation with the state before it, converge to that and never look again."""
        generation, active, loaded = await self._change(
            keys=[self.keys.desired], args=[change, model, active_when_unset, repr(time.time())]
        )
        await self.publish("converge")
        return DesiredState(str(active), frozenset(json.loads(loaded)), int(generation))

    async def init_desired(self, active: str) -> None:
        """The first process of a fleet sets the default; later ones find it there."""
        await cast(Awaitable[bool], self.redis.hsetnx(self.keys.desired, "active", active))

    async def publish(self, op: str, **fields: str) -> None:
        entry: dict[FieldT, EncodableT] = {"op": op}
        entry.update(fields)
        await self.redis.xadd(self.keys.commands, entry, maxlen=COMMANDS_MAXLEN, approximate=True)

    async def processes(self) -> list[dict[str, Any]]:
        """Every process seen within PROCESS_KEY_TTL_SECONDS, each `running` or `lost`."""
        now = time.time()
        members = await self.redis.zrangebyscore(
            self.keys.processes, now - PROCESS_KEY_TTL_SECONDS, "+inf", withscores=True
        )
        listed = []
        for process_id, seen_at in members:
            fields = await cast(Awaitable[dict[str, str]], self.redis.hgetall(self.keys.process(process_id)))
            beat = _decode_heartbeat(fields) if fields else {"process_id": process_id}
            interval = float(beat.get("interval_seconds", self._heartbeat_seconds))
            lost = now - float(seen_at) > LOST_AFTER_HEARTBEATS * interval
            listed.append({**beat, "status": "lost" if lost else "running", "last_seen": float(seen_at)})
        return listed


class FleetAgent:
    """This process's side: publish heartbeats, converge to the desired state, obey commands."""

    def __init__(
        self,
        control: FleetControl,
        registry: ModelRegistry,
        describe: Describe,
        *,
        process_id: str,
        role: str,
        restart: ProcessRestart,
        heartbeat_seconds: float,
        poll_seconds: float,
        holds_models: bool = True,
    ) -> None:
        self.control = control
        self._keys = control.keys
        self._redis = control.redis  # the one client, shared with the admin side
        self._registry = registry
        self._describe = describe
        self.process_id = process_id
        self._role = role
        self._restart = restart
        self._holds_models = holds_models  # False: a remote-mode web tier, which beats but loads nothing
        self._heartbeat_seconds = heartbeat_seconds
        self._poll_seconds = poll_seconds
        self._generation = -1
        self._last_command_id = "$"
        self._converging = asyncio.Lock()
        self.last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Read the desired state before serving (bounded by Redis' short timeouts), then run in the background."""
        with contextlib.suppress(*REDIS_FAILURES):
            self._last_command_id = await self._latest_command_id()
            if self._holds_models:
                await self.control.init_desired(self._registry.default_version)
            await self.converge()
            await self.heartbeat()
        self._tasks = [
            asyncio.create_task(self._beat_forever(), name="fleet-heartbeat"),
            asyncio.create_task(self._follow_commands(), name="fleet-commands"),
        ]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        with contextlib.suppress(*REDIS_FAILURES):
            await self._redis.delete(self._keys.process(self.process_id))
            await self._redis.zrem(self._keys.processes, self.process_id)

    async def converge(self) -> None:
        """Load what is wanted, activate the desired version, unload the rest. Failures are reported, not raised."""
        if not self._holds_models:
            return
        async with self._converging:  # read inside: a convergence that waited must not apply an older state
            desired = await self.control.desired()
            if desired is None or desired.generation == self._generation:
                return
            self._generation = desired.generation
            log.info(
                "fleet_converging", active=desired.active, loaded=sorted(desired.loaded), generation=desired.generation
            )
            await self._try("activate", desired.active, self._registry.activate)
            for name in sorted(desired.wanted - {desired.active}):
                await self._try("load", name, self._registry.load)
            for name in self._registry.loaded():
                if name not in desired.wanted and name != self._registry.active:
                    await self._try("unload", name, self._registry.unload)

    async def _try(self, action: str, name: str, step: Callable[[str], Awaitable[object]]) -> None:
        try:
            await step(name)
        except Exception as exc:  # one bad version must not stop the others converging
            self.last_error = f"{action} {name}: {exc}"
            log.warning("fleet_step_failed", action=action, model=name, error=str(exc))

    async def heartbeat(self) -> None:
        now = time.time()
        fields = {key: json.dumps(value) for key, value in self._describe().items()}
        fields.update(
            process_id=json.dumps(self.process_id),
            heartbeat_at=json.dumps(now),
            interval_seconds=json.dumps(self._heartbeat_seconds),
            last_error=json.dumps(self.last_error),
            models=json.dumps(self._registry.describe() if self._holds_models else []),
            active_model=json.dumps(self._registry.active),
        )
        key = self._keys.process(self.process_id)
        async with self._redis.pipeline(transaction=True) as pipe:  # one key: cluster-safe
            pipe.hset(key, mapping=fields)
            pipe.expire(key, PROCESS_KEY_TTL_SECONDS)
            await pipe.execute()
        await self._redis.zadd(self._keys.processes, {self.process_id: now})
        await self._redis.zremrangebyscore(self._keys.processes, "-inf", now - PROCESS_KEY_TTL_SECONDS)

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.heartbeat()
                await self.converge()  # catches up on a change made while this process could not see Redis
            except REDIS_FAILURES as exc:
                log.debug("fleet_heartbeat_failed", error=type(exc).__name__)
            except Exception:
                log.exception("fleet_heartbeat_error")
            await asyncio.sleep(self._heartbeat_seconds)

    async def _follow_commands(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                if self._last_command_id == "$":
                    self._last_command_id = await self._latest_command_id()
                    continue
                replies = await self._redis.xread({self._keys.commands: self._last_command_id}, count=100)
                for _, entries in replies:
                    for command_id, command in entries:
                        self._last_command_id = command_id
                        await self._obey(command)
            except REDIS_FAILURES as exc:
                log.debug("fleet_commands_unreachable", error=type(exc).__name__)
            except Exception:
                log.exception("fleet_command_error")

    async def _obey(self, command: dict[str, str]) -> None:
        target, role = command.get("target", "*"), command.get("role")
        if target not in ("*", self.process_id) or role not in (None, self._role):
            return
        if command.get("op") == "restart":
            self._restart.request(f"fleet command {target if role is None else 'role ' + role}")
        elif command.get("op") == "converge":
            await self.converge()
        elif command.get("op") == "reload":
            name = command.get("model") or self._registry.active
            if name is not None and self._registry.version(name).state is ModelState.AVAILABLE:
                log.info("fleet_reload", model=name)
                await self._try("reload", name, self._registry.reload)

    async def _latest_command_id(self) -> str:
        newest = await self._redis.xrevrange(self._keys.commands, count=1)
        return str(newest[0][0]) if newest else "0-0"


def _decode_heartbeat(fields: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in fields.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded
