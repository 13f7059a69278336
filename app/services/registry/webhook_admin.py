"""What an operator does to webhooks, from the admin API or the control center alike: register one (its URL
checked, its secret shown once), delete one, replay a dead delivery; each change goes to the audit log under the
operator's name. Reads pass through to the store."""

from __future__ import annotations

from collections.abc import Iterable

from app.services.identity.audit import AuditLog
from app.services.registry.outbox import WebhookEvent
from app.services.registry.webhooks import Webhook, WebhookDelivery, WebhookStore, check_url

Address = tuple[str, int]


class WebhookAdmin:
    def __init__(self, store: WebhookStore, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    async def register(
        self,
        actor: str,
        url: str,
        events: Iterable[WebhookEvent],
        secret: str | None,
        own_addresses: Iterable[Address],
    ) -> tuple[Webhook, str]:
        """422 for a URL that is not http(s) or points at this service itself (`own_addresses`: where it is reached
        and where it listens); else the new webhook and its signing secret."""
        check_url(url, own_addresses)
        webhook, secret = await self._store.register(url, events, secret)
        details = {"url": webhook.url, "events": [event.value for event in webhook.events]}
        await self._audit.record(actor, "webhook.created", str(webhook.id), details)
        return webhook, secret

    async def delete(self, actor: str, webhook_id: int) -> Webhook:
        webhook = await self._store.delete(webhook_id)
        await self._audit.record(actor, "webhook.deleted", str(webhook_id), {"url": webhook.url})
        return webhook

    async def replay(self, actor: str, delivery_id: int) -> WebhookDelivery:
        delivery = await self._store.replay(delivery_id)
        await self._audit.record(actor, "webhook.delivery_replayed", str(delivery_id), {"event": delivery.event})
        return delivery

    async def list_webhooks(self) -> list[Webhook]:
        return await self._store.list_webhooks()

    async def dead(self, limit: int = 100) -> list[WebhookDelivery]:
        return await self._store.dead(limit)

    async def recent(self, limit: int = 50) -> list[WebhookDelivery]:
        return await self._store.recent(limit)
