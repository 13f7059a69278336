"""Webhooks: who is told of the registry's hazard events (see `outbox.py`), which URLs may be told, and the dead
deliveries (out of attempts) an operator lists and replays."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.core.errors import ValidationFailed, WebhookNotFound
from app.services.registry.outbox import DeliveryStatus, WebhookEvent
from app.services.registry.store import transaction
from app.services.registry.tables import webhook_deliveries, webhooks

MAX_URL_CHARS = 2048
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    events: tuple[WebhookEvent, ...]
    created_at: datetime


@dataclass(frozen=True)
class WebhookDelivery:
    id: int
    webhook_id: int
    url: str
    event: str
    attempts: int
    status: DeliveryStatus
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime


def check_url(url: str, own_addresses: Iterable[tuple[str, int]]) -> None:
    """422 unless `url` is http(s) with a host, and not the service itself: one of its own `(host, port)`s, or a
    loopback or unspecified address on one of its ports (a webhook to itself would loop its own events)."""
    if len(url) > MAX_URL_CHARS:
        raise ValidationFailed(f"The webhook URL is longer than {MAX_URL_CHARS} characters.", details={"url": url})
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationFailed("The webhook URL cannot be parsed.", details={"url": url}) from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationFailed("A webhook URL must be http:// or https:// with a host.", details={"url": url})
    own = {(own_host.lower(), own_port) for own_host, own_port in own_addresses}
    if (host, port) in own or (_is_local(host) and port in {own_port for _, own_port in own}):
        raise ValidationFailed("A webhook URL must not point at this service itself.", details={"url": url})


def _is_local(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookStore:
    """Webhooks registered by operators, and the dead deliveries they may replay."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def register(
        self, url: str, events: Iterable[WebhookEvent], secret: str | None = None
    ) -> tuple[Webhook, str]:
        """A new webhook and its signing secret (made here unless given): shown once, to whoever registered it."""
        chosen = tuple(dict.fromkeys(events)) or tuple(WebhookEvent)
        secret = secret or secrets.token_hex(32)
        created_at = self._clock()
        async with transaction(self._engine) as connection:
            result = await connection.execute(
                webhooks.insert().values(
                    url=url,
                    secret=secret,
                    events=",".join(event.value for event in chosen),
                    created_at=created_at,
                    disabled=False,
                )
            )
        assert result.inserted_primary_key is not None
        return Webhook(int(result.inserted_primary_key[0]), url, chosen, created_at), secret

    async def list_webhooks(self) -> list[Webhook]:
        statement = sa.select(webhooks).where(webhooks.c.disabled.is_(False)).order_by(webhooks.c.id)
        async with transaction(self._engine) as connection:
            return [_webhook(row) for row in await connection.execute(statement)]

    async def delete(self, webhook_id: int) -> Webhook:
        """Nothing more is sent to it, pending deliveries included; its dead letters stay listed."""
        async with transaction(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(webhooks).where(webhooks.c.id == webhook_id, webhooks.c.disabled.is_(False))
                )
            ).first()
            if row is None:
                raise WebhookNotFound(details={"webhook_id": webhook_id})
            await connection.execute(webhooks.update().where(webhooks.c.id == webhook_id).values(disabled=True))
        return _webhook(row)

    async def dead(self, limit: int = 100) -> list[WebhookDelivery]:
        """Dead deliveries, newest first."""
        statement = (
            _deliveries_with_url()
            .where(webhook_deliveries.c.status == DeliveryStatus.DEAD.value)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        async with transaction(self._engine) as connection:
            return [_delivery(row) for row in await connection.execute(statement)]

    async def replay(self, delivery_id: int) -> WebhookDelivery:
        """A dead delivery back in the outbox with a fresh set of attempts, due now."""
        dead = (webhook_deliveries.c.id == delivery_id) & (webhook_deliveries.c.status == DeliveryStatus.DEAD.value)
        async with transaction(self._engine) as connection:
            result = await connection.execute(
                webhook_deliveries.update()
                .where(dead)
                .values(status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=self._clock())
            )
            if result.rowcount != 1:
                raise WebhookNotFound(details={"delivery_id": delivery_id})
            row = (await connection.execute(_deliveries_with_url().where(webhook_deliveries.c.id == delivery_id))).one()
        return _delivery(row)

    async def recent(self, limit: int = 50) -> list[WebhookDelivery]:
        """The newest deliveries of every webhook, whatever their status (what the control center shows)."""
        statement = _deliveries_with_url().order_by(webhook_deliveries.c.id.desc()).limit(limit)
        async with transaction(self._engine) as connection:
            return [_delivery(row) for row in await connection.execute(statement)]

    async def deliveries(self, webhook_id: int) -> list[WebhookDelivery]:
        """Every delivery to one webhook, oldest first (what operators and tests inspect)."""
        statement = (
            _deliveries_with_url()
            .where(webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(webhook_deliveries.c.id)
        )
        async with transaction(self._engine) as connection:
            return [_delivery(row) for row in await connection.execute(statement)]


def _deliveries_with_url() -> sa.Select[Any]:
    return sa.select(webhook_deliveries, webhooks.c.url).join(
        webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id
    )


def _webhook(row: Any) -> Webhook:
    fields = row._mapping
    events = tuple(WebhookEvent(name) for name in fields["events"].split(","))
    return Webhook(fields["id"], fields["url"], events, fields["created_at"])


def _delivery(row: Any) -> WebhookDelivery:
    fields = row._mapping
    return WebhookDelivery(
        id=fields["id"],
        webhook_id=fields["webhook_id"],
        url=fields["url"],
        event=fields["event"],
        attempts=fields["attempts"],
        status=DeliveryStatus(fields["status"]),
        last_error=fields["last_error"],
        created_at=fields["created_at"],
        next_attempt_at=fields["next_attempt_at"],
    )
