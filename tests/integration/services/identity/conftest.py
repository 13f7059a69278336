"""Redis clients as the app builds them (create_redis), on the test's backend, in a namespace of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from app.services.core.redis_client import create_redis
from app.services.core.types import RedisClient
from app.settings import Settings


@dataclass
class IdentityRedis:
    namespace: str
    new_client: Callable[[], RedisClient]  # one per "replica": each process has its own connections


@pytest.fixture
async def identity_redis(make_settings: Callable[..., Settings]) -> AsyncIterator[IdentityRedis]:
    settings = make_settings()
    clients: list[RedisClient] = []

    def new_client() -> RedisClient:
        clients.append(create_redis(settings.redis))
        return clients[-1]

    yield IdentityRedis(settings.fleet.name, new_client)
    for client in clients:
        await client.aclose()
