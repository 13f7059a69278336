"""The outbox of hazard events: written in the same transaction as the change it reports, one row per subscribed
webhook, so a change is never told without having happened nor happens without being told. The sender
(`webhook_sender.py`) POSTs the rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardEvent, HazardRecord, PhotoUrl
from app.services.registry.tables import webhook_deliveries, webhooks


class WebhookEvent(StrEnum):
    NEW = "hazard.new"  # a hazard's first report
    STATUS_CHANGED = "hazard.status_changed"  # a verdict, a close, a reopening
    SUSPECTED_FIXED = "hazard.suspected_fixed"  # clean passes found it gone (this move sends only this event)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # out of attempts: kept for an operator to replay


def event_of(change: HazardEvent) -> WebhookEvent:
    if change.from_status is None:
        return WebhookEvent.NEW
    if change.to_status is Status.SUSPECTED_FIXED:
        return WebhookEvent.SUSPECTED_FIXED
    return WebhookEvent.STATUS_CHANGED


def event_body(event: WebhookEvent, hazard: HazardRecord, change: HazardEvent) -> str:
    """The JSON body every subscriber of this event gets, with one id to tell repeats apart (delivery is at
    least once)."""
    hazard_fields = {
        "id": hazard.id,
        "tenant": hazard.tenant,
        "label": hazard.label,
        "status": hazard.status.value,
        "lat": hazard.lat,
        "lon": hazard.lon,
        "uncertainty_m": hazard.uncertainty_m,
        "first_reported_at": hazard.first_reported_at.isoformat(),
        "last_reported_at": hazard.last_reported_at.isoformat(),
        "reports": hazard.reports,
        "best_photo_url": hazard.best_photo_url,
    }
    change_fields = {
        "move": change.move,
        "from_status": None if change.from_status is None else change.from_status.value,
        "to_status": change.to_status.value,
        "actor": change.actor,
        "category": change.category,
        "note": change.note,
        "at": change.at.isoformat(),
    }
    body = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event.value,
        "created_at": change.at.isoformat(),
        "data": {"hazard": hazard_fields, "change": change_fields},
    }
    return json.dumps(body, separators=(",", ":"))


def with_photo_url(payload: str, photo_url: PhotoUrl) -> bytes:
    """The stored body as sent: its hazard's photo at the address `photo_url` makes of it now. A signed /media URL
    expires, so it is made at each attempt: a delivery retried or replayed hours later still carries one that
    opens (a repeat differs from the first attempt in that URL only)."""
    body = json.loads(payload)
    hazard = body["data"]["hazard"]
    stored = hazard.get("best_photo_url")
    hazard["best_photo_url"] = photo_url(stored)
    if hazard["best_photo_url"] == stored:
        return payload.encode()  # the bytes written, unchanged
    return json.dumps(body, separators=(",", ":")).encode()


async def enqueue_event(
    connection: AsyncConnection,
    read_hazard: Callable[[], Awaitable[HazardRecord]],
    change: HazardEvent,
    now: datetime,
) -> int:
    """One outbox row per enabled webhook subscribed to the change's event, in the caller's transaction; the
    hazard is read (`await read_hazard()`) only when someone listens. Returns the rows written."""
    event = event_of(change)
    rows = await connection.execute(sa.select(webhooks.c.id, webhooks.c.events).where(webhooks.c.disabled.is_(False)))
    targets = [webhook_id for webhook_id, events in rows if event.value in events.split(",")]
    if not targets:
        return 0
    hazard = await read_hazard()
    payload = event_body(event, hazard, change)
    await connection.execute(
        webhook_deliveries.insert(),
        [
            {
                "webhook_id": webhook_id,
                "event": event.value,
                "payload": payload,
                "attempts": 0,
                "next_attempt_at": now,
                "status": DeliveryStatus.PENDING.value,
                "created_at": now,
            }
            for webhook_id in targets
        ],
    )
    return len(targets)
