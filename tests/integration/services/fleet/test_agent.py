"""The fleet through a real Redis (app/services/fleet/agent.py): FleetAgent publishes heartbeats that FleetControl
lists, and converges to the desired model state that FleetControl sets, on a registry of real engines."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.services.fleet.agent import FleetAgent, FleetControl
from app.services.fleet.restart import ProcessRestart
from app.services.inference.registry import ModelState
from tests.support.models import DEFAULT_VERSION, OTHER_VERSION, real_registry
from tests.support.redis_process import RedisProcess

HEARTBEAT_SECONDS = 0.2
POLL_SECONDS = 0.05
WITHIN_SECONDS = 60.0  # a model compiles within it on a busy machine


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WITHIN_SECONDS
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {WITHIN_SECONDS} s"
        await asyncio.sleep(POLL_SECONDS)


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def fleet_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def control(redis_client: Redis, fleet_name: str) -> FleetControl:
    return FleetControl(redis_client, fleet_name, HEARTBEAT_SECONDS)


async def test_a_heartbeat_is_listed_running_and_a_stopped_agent_leaves_the_list(
    redis_client: Redis, fleet_name: str, model_cache: Path
) -> None:
    agent = FleetAgent(
        control(redis_client, fleet_name),
        real_registry(model_cache),
        lambda: {"role": "api", "inference_mode": "remote"},
        process_id="api-1",
        role="api",
        restart=ProcessRestart(),
        heartbeat_seconds=HEARTBEAT_SECONDS,
        poll_seconds=POLL_SECONDS,
        holds_models=False,  # a remote-mode web tier: it beats, and loads nothing
    )
    admin = control(redis_client, fleet_name)  # another process's view
    await agent.start()
    try:
        (listed,) = await admin.processes()
        assert (listed["process_id"], listed["status"], listed["role"]) == ("api-1", "running", "api")
        assert listed["models"] == [] and listed["active_model"] is None
        assert await admin.desired() is None  # a process that holds no model sets no desired state
    finally:
        await agent.stop()
    assert await admin.processes() == []


async def test_a_second_agent_converges_to_the_desired_model_another_process_set(
    redis_client: Redis, fleet_name: str, model_cache: Path
) -> None:
    registry = real_registry(model_cache)
    worker = FleetAgent(
        control(redis_client, fleet_name),
        registry,
        lambda: {"role": "worker"},
        process_id="worker-1",
        role="worker",
        restart=ProcessRestart(),
        heartbeat_seconds=HEARTBEAT_SECONDS,
        poll_seconds=POLL_SECONDS,
    )
    admin = control(redis_client, fleet_name)
    await worker.start()
    try:
        # The first process of a fleet sets the default as desired and loads it before it serves.
        desired = await admin.desired()
        assert desired is not None and desired.active == DEFAULT_VERSION
        assert registry.active == DEFAULT_VERSION

        await admin.change_desired("activate", OTHER_VERSION, DEFAULT_VERSION)

        async def converged() -> bool:
            return registry.active == OTHER_VERSION and registry.loaded() == [OTHER_VERSION]

        await eventually(converged, "the worker activates the desired version and unloads the other")
        assert registry.version(DEFAULT_VERSION).state is ModelState.UNLOADED

        async def reported() -> bool:
            (listed,) = await admin.processes()
            return bool(listed["active_model"] == OTHER_VERSION)

        await eventually(reported, "its heartbeat reports the new active version")
        assert worker.last_error is None
    finally:
        await worker.stop()
        registry.release_all()


async def test_a_restart_reaches_the_processes_of_its_role_or_id_and_drains_with_sigterm(
    redis_client: Redis, fleet_name: str, model_cache: Path
) -> None:
    """Real SIGTERMs to this test process, caught here: the launcher's stop is not part of this test."""
    restarts = {role: ProcessRestart() for role in ("api", "worker")}
    agents = [
        FleetAgent(
            control(redis_client, fleet_name),
            real_registry(model_cache),
            lambda: {},
            process_id=f"{role}-1",
            role=role,
            restart=restart,
            heartbeat_seconds=HEARTBEAT_SECONDS,
            poll_seconds=POLL_SECONDS,
            holds_models=False,
        )
        for role, restart in restarts.items()
    ]
    admin = control(redis_client, fleet_name)
    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
    try:
        for agent in agents:
            await agent.start()
        with restarts["api"].serving(supervised=False), restarts["worker"].serving(supervised=True):
            await admin.publish("restart", target="*", role="worker")

            async def worker_restarting() -> bool:
                return restarts["worker"].requested and terms == [signal.SIGTERM]

            await eventually(worker_restarting, "the worker drains with SIGTERM")
            await admin.publish("restart", target="api-9")  # another process's id
            await admin.publish("converge")  # a later command: the ones before it were read
            await asyncio.sleep(10 * POLL_SECONDS)
            assert not restarts["api"].requested and terms == [signal.SIGTERM], "the API was left alone"
            await admin.publish("restart", target="api-1")

            async def api_restarting() -> bool:
                return restarts["api"].requested and len(terms) == 2

            await eventually(api_restarting, "the API drains with SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, previous)
        for agent in agents:
            await agent.stop()


async def test_a_reader_never_sees_a_generation_with_another_generations_state(
    redis_client: Redis, fleet_name: str
) -> None:
    """An agent converging on a generation with the state of the one before would never converge again: the
    generation and the state it names are written together."""
    writer, reader = control(redis_client, fleet_name), control(redis_client, fleet_name)
    written: dict[int, str] = {}
    seen: list[tuple[int, str]] = []

    async def write() -> None:
        for index in range(200):
            desired = await writer.change_desired("activate", f"v{index}", "v")
            written[desired.generation] = desired.active

    async def read(done: asyncio.Task[None]) -> None:
        while not done.done():
            desired = await reader.desired()
            if desired is not None:
                seen.append((desired.generation, desired.active))

    writing = asyncio.create_task(write())
    await asyncio.gather(writing, read(writing))
    assert len(seen) > 100
    assert [(generation, active) for generation, active in seen if written[generation] != active] == []


async def test_changes_from_two_processes_at_once_all_land(redis_client: Redis, fleet_name: str) -> None:
    """Load, unload and activate from two admins at once: none of them undoes another's."""
    first, second = control(redis_client, fleet_name), control(redis_client, fleet_name)

    async def load_all(admin: FleetControl, prefix: str) -> None:
        for index in range(50):
            await admin.change_desired("load", f"{prefix}{index}", "base")

    await asyncio.gather(load_all(first, "a"), load_all(second, "b"))
    desired = await first.desired()
    assert desired is not None and desired.active == "base"
    assert desired.loaded == {f"{prefix}{index}" for prefix in "ab" for index in range(50)}
    assert desired.generation == 100

    await asyncio.gather(
        *(
            admin.change_desired("unload", f"a{index}", "base")
            for index, admin in ((i, first if i % 2 else second) for i in range(50))
        )
    )
    await first.change_desired("activate", "b7", "base")
    desired = await second.desired()
    assert desired is not None and desired.active == "b7"
    assert desired.loaded == {f"b{index}" for index in range(50)} - {"b7"}
