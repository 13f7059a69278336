"""Webhooks on a real database (SQLite and PostgreSQL) to a real HTTP receiver: a change and its outbox row are one
transaction, deliveries are signed, a receiver that keeps failing gets retries then a dead letter, and a replay
delivers it once the receiver is fixed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.core.errors import TransitionNotAllowed, WebhookNotFound
from app.services.registry.outbox import DeliveryStatus, WebhookEvent
from app.services.registry.records import HazardFilter
from app.services.registry.store import HazardRegistry
from app.services.registry.tables import webhook_deliveries
from app.services.registry.webhook_sender import Retries, WebhookSender
from app.services.registry.webhooks import WebhookStore
from tests.integration.services.registry.conftest import at
from tests.support.webhook_receiver import Receiver, signature_is_valid, webhook_receiver

FAST = Retries(max_attempts=3, base_seconds=0.01, max_seconds=0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def webhooks(engine: AsyncEngine) -> WebhookStore:
    return WebhookStore(engine)


@pytest.fixture
def sender(engine: AsyncEngine) -> WebhookSender:
    return WebhookSender(engine, FAST, timeout_seconds=2.0)


async def send_until(sender: WebhookSender, condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Run the sender's passes (what its task does) until `condition` holds, bounded."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not met within {within} s"
        await sender.send_due()
        await asyncio.sleep(0.01)


async def outbox_size(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(sa.select(sa.func.count()).select_from(webhook_deliveries)) or 0)


async def new_hazard(registry: HazardRegistry, key: str = "m1") -> int:
    assert await registry.report_sighting("city", key, "pothole", 50.85, 4.35, 3.0, at(0)) == "created"
    return next(h.id for h in (await registry.query(HazardFilter())).items if h.map_key == key)


async def test_a_new_hazard_and_a_verdict_are_posted_signed(
    registry: HazardRegistry, webhooks: WebhookStore, sender: WebhookSender, receiver: Receiver
) -> None:
    webhook, secret = await webhooks.register(receiver.url, [])
    hazard_id = await new_hazard(registry)
    await send_until(sender, lambda: bool(receiver.of_type("hazard.new")), "hazard.new received")
    await registry.give_verdict(hazard_id, actor="inspector-1", category="pothole", note="deep")
    await send_until(sender, lambda: bool(receiver.of_type("hazard.status_changed")), "status_changed received")

    [new] = receiver.of_type("hazard.new")
    [changed] = receiver.of_type("hazard.status_changed")
    assert signature_is_valid(secret, new) and signature_is_valid(secret, changed)
    assert not signature_is_valid("another-secret-entirely", new)
    assert new.headers["hazard-event"] == "hazard.new" and new.headers["content-type"] == "application/json"
    assert new.json["data"]["hazard"]["id"] == hazard_id and new.json["data"]["hazard"]["status"] == "open"
    assert changed.json["data"]["change"] == {
        "move": "verify",
        "from_status": "open",
        "to_status": "verified",
        "actor": "inspector-1",
        "category": "pothole",
        "note": "deep",
        "at": changed.json["data"]["change"]["at"],
    }
    assert new.json["id"] != changed.json["id"]
    deliveries = await webhooks.deliveries(webhook.id)
    assert [(d.event, d.status, d.attempts) for d in deliveries] == [
        ("hazard.new", DeliveryStatus.DELIVERED, 1),
        ("hazard.status_changed", DeliveryStatus.DELIVERED, 1),
    ]


async def test_a_refused_move_writes_nothing_to_the_outbox(
    registry: HazardRegistry, webhooks: WebhookStore, engine: AsyncEngine
) -> None:
    await webhooks.register("http://127.0.0.1:9/hooks", [WebhookEvent.STATUS_CHANGED])
    hazard_id = await new_hazard(registry)
    assert await outbox_size(engine) == 0  # not subscribed to hazard.new
    await registry.give_verdict(hazard_id, actor="inspector-1", category="not_an_issue")
    assert await outbox_size(engine) == 1
    with pytest.raises(TransitionNotAllowed):
        await registry.close(hazard_id, actor="inspector-1")
    assert await outbox_size(engine) == 1  # the move was rolled back, and its event with it


async def test_a_failing_receiver_gets_retries_then_a_dead_letter_that_a_replay_delivers(
    registry: HazardRegistry, webhooks: WebhookStore, sender: WebhookSender, receiver: Receiver
) -> None:
    webhook, secret = await webhooks.register(receiver.url, [WebhookEvent.NEW])
    receiver.status = 500
    await new_hazard(registry)

    async def dead() -> bool:
        return bool(await webhooks.dead())

    deadline = time.monotonic() + 10
    while not await dead():
        assert time.monotonic() < deadline, "no dead letter within 10 s"
        await sender.send_due()
        await asyncio.sleep(0.01)
    [letter] = await webhooks.dead()
    assert (letter.webhook_id, letter.event, letter.attempts, letter.last_error) == (
        webhook.id,
        "hazard.new",
        FAST.max_attempts,
        "HTTP 500",
    )
    assert len(receiver.received) == FAST.max_attempts  # every attempt reached it; none after the last
    await sender.send_due()
    assert len(receiver.received) == FAST.max_attempts

    receiver.status = 200
    replayed = await webhooks.replay(letter.id)
    assert (replayed.status, replayed.attempts) == (DeliveryStatus.PENDING, 0)
    await send_until(sender, lambda: bool(receiver.of_type("hazard.new")), "replayed delivery received")
    [delivered] = receiver.of_type("hazard.new")
    assert signature_is_valid(secret, delivered)
    assert await webhooks.dead() == []
    with pytest.raises(WebhookNotFound):
        await webhooks.replay(letter.id)  # delivered now: not dead any more


async def test_a_deleted_webhook_is_sent_nothing_more(
    registry: HazardRegistry, webhooks: WebhookStore, sender: WebhookSender, receiver: Receiver
) -> None:
    webhook, _ = await webhooks.register(receiver.url, [])
    await webhooks.delete(webhook.id)
    await new_hazard(registry)
    assert await sender.send_due() == 0
    assert receiver.received == [] and await webhooks.list_webhooks() == []
    with pytest.raises(WebhookNotFound):
        await webhooks.delete(webhook.id)


async def test_clean_passes_send_hazard_suspected_fixed_only(
    registry: HazardRegistry, webhooks: WebhookStore, sender: WebhookSender, receiver: Receiver
) -> None:
    await webhooks.register(receiver.url, [WebhookEvent.SUSPECTED_FIXED, WebhookEvent.STATUS_CHANGED])
    await new_hazard(registry)
    for minute in (1, 2, 3):
        await registry.record_pass("city", "m1", session_id=f"s{minute}", at=at(minute), saw_it=False)
    await send_until(sender, lambda: bool(receiver.received), "hazard.suspected_fixed received")

    [told] = receiver.received
    assert told.json["type"] == "hazard.suspected_fixed"
    assert told.json["data"]["change"]["to_status"] == "suspected_fixed"
