"""Webhooks through HTTP: an operator registers a receiver (a real HTTP server on 127.0.0.1, another port), a drive
that confirms hazards sends it signed `hazard.new`, a verdict `hazard.status_changed`; a receiver answering 500 gets
retries then a dead letter the admin API lists and replays; URLs that are not http(s) or point at the service are
refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from app.settings import Settings
from tests.api.test_hazard_registry import FAST, OPERATOR, wait_for_registry
from tests.api.test_hazards import ROAD, send_drive
from tests.conftest import RunningApp
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver, signature_is_valid, webhook_receiver

MakeSettings = Callable[..., Settings]
StartApp = Callable[..., Awaitable[RunningApp]]
WEBHOOKS_FAST = {
    **FAST,
    "webhook_poll_seconds": 0.05,
    "webhook_max_attempts": 3,
    "webhook_retry_base_seconds": 0.02,
    "webhook_retry_max_seconds": 0.05,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


async def register(api: RunningApp, url: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/admin/api/webhooks", json={"url": url, **body}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_drive_and_a_verdict_reach_the_receiver_signed(
    start_app: StartApp, make_settings: MakeSettings, receiver: Receiver
) -> None:
    api = await start_app(make_settings(**WEBHOOKS_FAST))
    webhook = await register(api, receiver.url)
    assert webhook["events"] == ["hazard.new", "hazard.status_changed", "hazard.suspected_fixed"]
    listed = (await api.client.get("/admin/api/webhooks", headers=OPERATOR)).json()["webhooks"]
    assert [(w["id"], w["url"]) for w in listed] == [(webhook["id"], receiver.url)] and "secret" not in listed[0]

    await send_drive(api, await api.new_session())
    first, *_ = await wait_for_registry(api)

    news = await receiver.arrived("hazard.new", count=len(ROAD.hazards))  # one per confirmed hazard
    assert all(signature_is_valid(webhook["secret"], item) for item in news)
    verdict = await api.client.post(f"/hazards/{first['id']}/verdict", json={"category": "pothole"}, headers=OPERATOR)
    assert verdict.status_code == 200, verdict.text
    [changed] = await receiver.arrived("hazard.status_changed")
    assert signature_is_valid(webhook["secret"], changed)
    data = changed.json["data"]
    assert data["hazard"]["id"] == first["id"] and data["hazard"]["status"] == "verified"
    assert (data["change"]["from_status"], data["change"]["to_status"], data["change"]["actor"]) == (
        "open",
        "verified",
        "admin",
    )

    deleted = await api.client.delete(f"/admin/api/webhooks/{webhook['id']}", headers=OPERATOR)
    assert deleted.status_code == 200
    assert (await api.client.get("/admin/api/webhooks", headers=OPERATOR)).json()["webhooks"] == []
    again = await api.client.delete(f"/admin/api/webhooks/{webhook['id']}", headers=OPERATOR)
    assert again.status_code == 404 and again.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"


async def test_a_failing_receiver_ends_in_the_dead_letters_and_a_replay_delivers_it(
    start_app: StartApp, make_settings: MakeSettings, receiver: Receiver
) -> None:
    api = await start_app(make_settings(**WEBHOOKS_FAST))
    webhook = await register(api, receiver.url, events=["hazard.new"])
    receiver.status = 500
    await send_drive(api, await api.new_session())
    dead: list[dict[str, Any]] = []

    async def all_dead() -> bool:
        nonlocal dead
        response = await api.client.get("/admin/api/webhooks/dead", headers=OPERATOR)
        assert response.status_code == 200, response.text
        dead = response.json()["deliveries"]
        return len(dead) == len(ROAD.hazards)

    await wait_for(all_dead, "every hazard.new delivery dead after its attempts", within=20)
    assert all((d["attempts"], d["last_error"], d["status"]) == (3, "HTTP 500", "dead") for d in dead)
    assert len(receiver.received) == 3 * len(ROAD.hazards)

    receiver.status = 200
    anonymous = await api.client.post(f"/admin/api/webhooks/dead/{dead[0]['id']}/replay")
    assert anonymous.status_code == 401
    replayed = await api.client.post(f"/admin/api/webhooks/dead/{dead[0]['id']}/replay", headers=OPERATOR)
    assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
    [replay] = await receiver.arrived("hazard.new")
    assert signature_is_valid(webhook["secret"], replay)
    remaining = (await api.client.get("/admin/api/webhooks/dead", headers=OPERATOR)).json()["deliveries"]
    assert [d["id"] for d in remaining] == [d["id"] for d in dead[1:]]
    missing = await api.client.post(f"/admin/api/webhooks/dead/{dead[0]['id']}/replay", headers=OPERATOR)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/hooks",
        "javascript:alert(1)",
        "http://testserver/hooks",  # the host and port this service is reached at
        "http://127.0.0.1:80/hooks",  # loopback on the port it is served on
    ],
)
async def test_a_webhook_url_that_is_not_http_or_points_at_the_service_is_422(
    start_app: StartApp, make_settings: MakeSettings, url: str
) -> None:
    api = await start_app(make_settings(**WEBHOOKS_FAST))
    assert (await api.client.post("/admin/api/webhooks", json={"url": url})).status_code == 401
    refused = await api.client.post("/admin/api/webhooks", json={"url": url}, headers=OPERATOR)
    assert refused.status_code == 422, refused.text
    assert (await api.client.get("/admin/api/webhooks", headers=OPERATOR)).json()["webhooks"] == []
