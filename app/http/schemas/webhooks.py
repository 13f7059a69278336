"""The admin API's bodies for webhooks: what an operator registers, what is shown of a webhook and its deliveries.

The signing secret appears in `WebhookCreated` only, the one answer that carries it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.registry.webhooks import MAX_URL_CHARS, Webhook, WebhookDelivery

EventName = Literal["hazard.new", "hazard.status_changed", "hazard.suspected_fixed"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description="http(s) URL the events are POSTed to.")
    events: list[EventName] = Field(
        default_factory=list, max_length=3, description="Events to send; empty: every event."
    )
    secret: str | None = Field(
        None, min_length=16, max_length=128, description="HMAC-SHA-256 key of the signatures; absent: one is made."
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[EventName]
    created_at: datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        events: list[EventName] = [event.value for event in webhook.events]
        return cls(id=webhook.id, url=webhook.url, events=events, created_at=webhook.created_at)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Shown once: verify `Hazard-Signature` with it.")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    url: str
    event: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            webhook_id=delivery.webhook_id,
            url=delivery.url,
            event=delivery.event,
            status=delivery.status.value,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            next_attempt_at=delivery.next_attempt_at,
        )


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
