"""The control center's webhooks page over HTTP (no browser): an admin registers a receiver (its secret shown once),
a URL the admin API refuses is refused here with the same 422, shown in the panel; a delivery the receiver keeps
failing is a dead letter on the page, replayed from it; a webhook is deleted; every change is in the audit log under
the operator's name; an inspector may not open the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from app.services.identity.roles import Role
from app.services.registry.records import Sighting
from app.services.registry.webhooks import WebhookStore
from tests.api.test_control_center import PASSWORD, csrf_token, log_in
from tests.api.test_control_center_identity import ORIGIN, StartApp, post
from tests.api.test_webhooks import WEBHOOKS_FAST, MakeSettings
from tests.conftest import RunningApp
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver, signature_is_valid, webhook_receiver

HTML = {"accept": "text/html"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


async def page_text(api: RunningApp) -> str:
    page = await api.client.get("/admin/webhooks", headers=HTML)
    assert page.status_code == 200, page.text
    return page.text


async def test_an_admin_registers_replays_and_deletes_webhooks_on_the_page(
    start_app: StartApp, make_settings: MakeSettings, receiver: Receiver
) -> None:
    api = await start_app(make_settings(**WEBHOOKS_FAST, admin_password=PASSWORD))
    assert (await log_in(api)).status_code == 303
    assert 'id="register-webhook"' in await page_text(api) and "No webhooks yet." in await page_text(api)
    for url, reason in (("ftp://gis.example.org/hooks", "http:// or https://"), ("http://testserver/x", "itself")):
        headers = {"origin": ORIGIN, "x-csrf-token": await csrf_token(api), "hx-request": "true"}
        refused = await api.client.post("/admin/webhooks", data={"url": url}, headers=headers)
        assert refused.status_code == 422 and "Registering the webhook failed: VALIDATION_ERROR" in refused.text
        assert reason in refused.text and "No webhooks yet." in refused.text

    receiver.status = 500
    created = await post(api, "/admin/webhooks", {"url": receiver.url, "events": ["hazard.new"]})
    secret = re.search(r'<code id="new-webhook-secret">([0-9a-f]{64})</code>', created)
    webhook = re.search(r'id="new-webhook" role="status" data-webhook-id="(\d+)"', created)
    assert secret and webhook, created
    assert secret[1] not in await page_text(api), "the secret is shown once only"
    sighting = Sighting("local", "page-test", "pothole", 52.5, 13.4, 2.0, datetime.now(UTC))
    await api.app.state.parts.registry.store.apply_sighting(sighting)
    store = api.app.state.parts.registry.webhooks
    await wait_for(lambda: _dead(store), "the failing receiver's delivery dead", within=20)
    [letter] = await store.dead()
    assert f'<tr data-delivery-id="{letter.id}" data-status="dead">' in await page_text(api)

    receiver.status = 200
    replayed = await post(api, f"/admin/webhooks/dead/{letter.id}/replay", {})
    assert f"Delivery {letter.id} sent again." in replayed and f'id="replay-{letter.id}"' not in replayed
    delivered = f'<tr data-delivery-id="{letter.id}" data-status="delivered">'
    await wait_for(lambda: _shown(api, delivered), "the replayed delivery delivered, on the page", within=20)
    assert signature_is_valid(secret[1], receiver.of_type("hazard.new")[0])
    deleted = await post(api, f"/admin/webhooks/{webhook[1]}/delete", {})
    assert "No webhooks yet." in deleted and await store.list_webhooks() == []

    audit = await api.client.get("/admin/audit", headers=HTML)
    actions = [audit.text.index(f'data-action="webhook.{action}"') for action in ("deleted", "delivery_replayed")]
    assert actions == sorted(actions) and audit.text.count('data-action="webhook.created"') == 1

    await api.app.state.identity.accounts.create("ines", "an inspector's password", Role.INSPECTOR)
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as inspector:
        assert (await log_in(api, "an inspector's password", "ines", client=inspector)).status_code == 303
        refused = await inspector.get("/admin/webhooks", headers=HTML)
        assert (
            refused.status_code == 403 and "/admin/webhooks" not in (await inspector.get("/admin", headers=HTML)).text
        )


async def _dead(store: WebhookStore) -> bool:
    return bool(await store.dead())


async def _shown(api: RunningApp, text: str) -> bool:
    return text in await page_text(api)
