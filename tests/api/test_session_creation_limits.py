"""Session creation is limited per client (a burst, a rate, a budget of TTL seconds), the client being the
trusted proxy's forwarded address when one is configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.services.sessions.admission import creation_key
from app.settings import Settings
from tests.conftest import DirectRedis, RunningApp

MakeSettings = Callable[..., Settings]


StartApp = Callable[..., Awaitable[RunningApp]]


async def create(api: RunningApp, forwarded: str | None = None, **body: Any) -> Any:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return await api.client.post("/sessions", json=body or None, headers=headers)


async def test_session_creation_is_limited_per_client_with_retry_after(
    start_app: StartApp, make_settings: MakeSettings, direct_redis: DirectRedis
) -> None:
    api = await start_app(make_settings(session_create_burst=3, session_create_rate_per_minute=6))
    for _ in range(3):
        assert (await create(api)).status_code == 201
    refused = await create(api, forwarded="203.0.113.9")  # a forwarded header from an untrusted peer changes nothing
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 10  # one session per 10 s
    settings = api.app.state.parts.settings
    key = creation_key(settings.fleet.name, "127.0.0.1")
    assert 0 < direct_redis.ttl(key) <= 3601  # the counter goes away once both buckets are full again (<= 1 h)


async def test_a_trusted_proxys_forwarded_address_is_the_client(
    start_app: StartApp, make_settings: MakeSettings
) -> None:
    api = await start_app(
        make_settings(
            session_create_burst=2,
            session_create_rate_per_minute=6,
            client_address_header="x-forwarded-for",
            trusted_proxies="127.0.0.1, 10.0.0.0/8",
        )
    )
    for _ in range(2):
        assert (await create(api, forwarded="203.0.113.7, 10.1.2.3")).status_code == 201
    assert (await create(api, forwarded="203.0.113.7")).status_code == 429
    # Another client behind the same proxy has a budget of its own; the client cannot spoof its way past the
    # proxy's own entry (the rightmost address that is not a proxy counts).
    assert (await create(api, forwarded="198.51.100.1")).status_code == 201
    assert (await create(api, forwarded="198.51.100.2, 203.0.113.7")).status_code == 429


async def test_long_ttls_spend_the_clients_ttl_budget(start_app: StartApp, make_settings: MakeSettings) -> None:
    api = await start_app(make_settings(session_create_ttl_budget_seconds=2 * 3600))
    assert (await create(api, ttl_seconds=3600)).status_code == 201
    assert (await create(api, ttl_seconds=3600)).status_code == 201
    over = await create(api, ttl_seconds=3600)
    assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1000  # an hour of budget refills in 30 min
