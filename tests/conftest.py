"""Shared fixtures: a private redis-server (and, for tests that run on both, a private Redis Cluster), settings
pointing at it, and a started app with an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import redis.cluster
from fastapi import FastAPI
from pwdlib import PasswordHash

from app.main import create_app
from app.settings import Settings
from tests.support.postgres_process import PostgresProcess
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_process import RedisProcess
from tests.support.server import LATENCY_BUDGET_FOR_BURSTS, SUITE_REQUEST_TIMEOUT_SECONDS

TEST_PEPPER = "test-pepper-of-the-suite-" + "0" * 16  # at least 32 bytes, as API_KEY_PEPPER must be
STOP_WITHIN_SECONDS = 30  # a shutdown that hangs must fail the test, not stall the suite
MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "best0408_openvino_model"

RedisTarget = RedisProcess | RedisCluster
SyncRedis = redis.Redis | redis.cluster.RedisCluster
# `pytestmark = both_redis_backends` runs every test of a module once per REDIS_MODE; ids say which.
both_redis_backends = pytest.mark.parametrize("redis_backend", ["standalone", "cluster"], indirect=True)
TIERS = ("unit", "integration", "api", "system")  # the folders under tests/, each a registered marker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test carries its folder's tier as a marker: `pytest -m unit`, `-m "not system"`."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        tier = item.path.resolve().relative_to(tests_dir).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Started on first use only: most tests never need it."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.kill()


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    """The REDIS_MODE of the test's app: standalone, unless its module runs on both (`both_redis_backends`)."""
    return str(getattr(request, "param", "standalone"))


@pytest.fixture
def redis_target(redis_backend: str, request: pytest.FixtureRequest) -> RedisTarget:
    """The suite's Redis of the test's backend."""
    target: RedisTarget = request.getfixturevalue("redis_cluster" if redis_backend == "cluster" else "redis_server")
    return target


def redis_settings(target: RedisTarget) -> dict[str, Any]:
    """The settings that point an app at `target`."""
    return {"redis_url": target.url, "redis_mode": "cluster" if isinstance(target, RedisCluster) else "standalone"}


def node_clients(target: RedisTarget) -> list[redis.Redis]:
    """One client per server: per-node commands (INFO, CONFIG RESETSTAT, DBSIZE) must visit every cluster node."""
    if isinstance(target, RedisCluster):
        return [redis.Redis(port=port, decode_responses=True) for port in target.ports]
    return [target.client()]


class DirectRedis:
    """A synchronous client straight to a Redis (one server or a cluster), bypassing the app: what is really
    stored. Typed reads: redis-py's sync and async clients share one return annotation (`Awaitable | Any`)."""

    def __init__(self, target: RedisTarget) -> None:
        self.client: SyncRedis = target.client()

    def hgetall(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.client.hgetall(key))

    def hget(self, key: str, field: str) -> str | None:
        return cast("str | None", self.client.hget(key, field))

    def get(self, key: str) -> str | None:
        return cast("str | None", self.client.get(key))

    def set(self, key: str, value: str) -> None:
        self.client.set(key, value)

    def delete(self, *keys: str) -> None:
        self.client.delete(*keys)

    def exists(self, *keys: str) -> int:
        return cast(int, self.client.exists(*keys))

    def ttl(self, key: str) -> int:
        return cast(int, self.client.ttl(key))

    def pttl(self, key: str) -> int:
        return cast(int, self.client.pttl(key))

    def llen(self, key: str) -> int:
        return cast(int, self.client.llen(key))

    def time(self) -> float:
        seconds, micros = cast(tuple[int, int], self.client.time())
        return seconds + micros / 1e6

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def direct_redis(redis_target: RedisTarget) -> Iterator[DirectRedis]:
    """What is really stored in the test's Redis."""
    client = DirectRedis(redis_target)
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenVINO's compile cache, shared by the suite: apps after the first load the model faster."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def make_settings(
    redis_target: RedisTarget, tmp_path: Path, model_cache: Path, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings for a test: the suite's Redis (ids are random, so tests share it) and a fleet of its own.
    On a cluster, the job queue lives on the suite's standalone Redis (it needs one node, see app/services/jobs)."""
    queue_url = request.getfixturevalue("redis_server").url if isinstance(redis_target, RedisCluster) else None

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "model_dir": MODEL_DIR,
            "model_repository": MODEL_DIR.parent,
            "model_cache_dir": model_cache,
            # The suite runs many apps in one process: its RSS is not one server's (the limit is tested alone).
            "model_memory_limit_mb": 65536,
            "fleet_name": f"test-{uuid.uuid4().hex[:12]}",  # no test sees another's desired model state
            **redis_settings(redis_target),
            "storage_dir": tmp_path / "uploads",
            "spool_dir": tmp_path / "spool",
            "registry_url": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",  # each test its own registry
            "api_key_pepper": TEST_PEPPER,  # one for the suite: apps of one test are replicas of one deployment
            "log_json": True,
            "log_level": "WARNING",
            "model_warmup_requests": 1,
            "upload_min_interval_seconds": 0,  # tests that count uploads want every frame considered
            "upload_per_hazard": False,  # ... not only a hazard's confirming frame (tests/api/test_hazards.py does)
            "active_sessions_refresh_seconds": 0,  # tests read the gauge right after changing sessions
            "queue_redis_url": queue_url,
            # Tests of other features do not work batch frames; the jobs tests turn the worker on.
            "embedded_worker": False,
            # One test client opens many sessions (fuzzing); the creation limits are tested on their own.
            "session_create_burst": 100_000,
            "session_create_rate_per_minute": 100_000.0,
            "session_create_ttl_budget_seconds": 10**9,
            # Bursts of concurrent frames test concurrency, not admission; the latency budget is tested on its own.
            "live_latency_budget_seconds": LATENCY_BUDGET_FOR_BURSTS,
            "request_timeout_seconds": SUITE_REQUEST_TIMEOUT_SECONDS,
        }
        if not {"admin_password", "admin_password_hash", "environment"} & overrides.keys():
            # An app given no password generates one and hashes it: ~0.14 s of argon2 per app, minutes over the
            # suite. Apps whose test chooses nothing share one hash instead (of a password nobody logs in with).
            values["admin_password_hash"] = unused_admin_password_hash()
        values.update(overrides)
        return Settings(**values)

    return build


@functools.cache
def unused_admin_password_hash() -> str:
    return PasswordHash.recommended().hash(secrets.token_urlsafe(24))


async def wait_until_ready(client: httpx.AsyncClient, within_seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_seconds
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get("/health/ready")
        if response.status_code == 200:
            return
        if response.json().get("phase") == "model_failed":
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("app did not become ready")


class RunningApp:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def new_session(self, **body: Any) -> str:
        response = await self.client.post("/sessions", json=body or None)
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])


@pytest.fixture
async def start_app() -> AsyncIterator[Callable[[Settings], Any]]:
    """Starts apps (lifespan included) and stops them at the end of the test."""
    stacks: list[tuple[FastAPI, Any]] = []

    async def start(settings: Settings, wait_ready: bool = True) -> RunningApp:
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stacks.append((app, lifespan))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        if wait_ready:
            await wait_until_ready(client)
        return RunningApp(app, client)

    yield start
    for _, lifespan in reversed(stacks):
        try:
            async with asyncio.timeout(STOP_WITHIN_SECONDS):
                await lifespan.__aexit__(None, None, None)
        except TimeoutError:
            stuck = [task.get_stack() for task in asyncio.all_tasks() if not task.done()]
            raise AssertionError(f"app did not stop within {STOP_WITHIN_SECONDS} s; tasks: {stuck}") from None


@pytest.fixture
async def api(start_app: Callable[[Settings], Any], make_settings: Callable[..., Settings]) -> RunningApp:
    """The app with default test settings, ready to serve."""
    return await start_app(make_settings())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresProcess]:
    """A private PostgreSQL (initdb into a temporary folder, a free port), started on first use only; with PostGIS
    in its template database where the machine has the extension (every database a test creates then has it)."""
    server = PostgresProcess()
    server.init()
    server.start()
    if server.postgis_available():
        server.enable_postgis()
    yield server
    with contextlib.suppress(subprocess.CalledProcessError):  # a test stopped it and failed before restarting it
        server.stop()
    server.remove()
