"""The webhook sender: POSTs the outbox's due deliveries, signed, retries failures with capped exponential backoff
and, out of attempts, leaves them dead for an operator to replay.

Signed the way payment providers sign theirs: `Hazard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of
"<t>.<body>" under the webhook's secret>`; a receiver recomputes it and refuses a stale `t` (replays).
Delivery is at least once: a receiver tells repeats apart by the body's `id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.registry.outbox import DeliveryStatus, with_photo_url
from app.services.registry.records import PhotoUrl, same_url
from app.services.registry.tables import webhook_deliveries, webhooks

log = structlog.get_logger(__name__)
SIGNATURE_HEADER = "Hazard-Signature"
MAX_ERROR_CHARS = 300
MAX_BACKOFF_DOUBLINGS = 30
# A delivery being sent is claimed this long past its timeout: another process's sender leaves it alone meanwhile.
CLAIM_MARGIN_SECONDS = 30.0

# (url, body, headers, timeout seconds) -> the HTTP status; raises OSError when nothing answered.
Post = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Hazard-Signature` header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is answered as a failure: following it would send events somewhere the operator did not register.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _post_blocking(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # an answer, just not a 2xx one
        return exc.code


async def post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST in a worker thread (urllib: no HTTP client among the runtime dependencies)."""
    return await asyncio.to_thread(_post_blocking, url, body, headers, timeout_s)


@dataclass(frozen=True)
class Retries:
    """Failed deliveries wait `base_seconds` doubling per attempt, at most `max_seconds`, jittered; after
    `max_attempts` attempts they are dead."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempts: int) -> float:
        delay = min(self.max_seconds, self.base_seconds * 2 ** min(attempts - 1, MAX_BACKOFF_DOUBLINGS))
        return random.uniform(delay / 2, delay)  # jitter: a receiver back from an outage is not hit all at once


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookSender:
    def __init__(
        self,
        engine: AsyncEngine,
        retries: Retries,
        *,
        timeout_seconds: float,
        batch: int = 50,
        post: Post = post_json,
        clock: Callable[[], datetime] = _utc_now,
        photo_url: PhotoUrl = same_url,
    ) -> None:
        """`photo_url`: the address a receiver may fetch a hazard's photo at (signed where the service keeps its
        frames, AUTH_MODE=keys: a receiver holds no key)."""
        self._engine = engine
        self._retries = retries
        self._timeout = timeout_seconds
        self._batch = batch
        self._post = post
        self._clock = clock
        self._photo_url = photo_url
        self.delivered = 0
        self.failed = 0

    async def run_forever(self, poll_seconds: float) -> None:
        """Send what is due every `poll_seconds`; a database that is down (or not migrated yet) is waited out."""
        while True:
            try:
                await self.send_due()
            except Exception as exc:
                log.warning("webhook_sender_failed", error=repr(exc)[:MAX_ERROR_CHARS])
            await asyncio.sleep(poll_seconds)

    async def send_due(self) -> int:
        """One pass over the due deliveries of enabled webhooks; returns how many were attempted."""
        now = self._clock()
        statement = (
            sa.select(webhook_deliveries, webhooks.c.url, webhooks.c.secret)
            .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
            .where(
                webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
                webhook_deliveries.c.next_attempt_at <= now,
                webhooks.c.disabled.is_(False),
            )
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
            .limit(self._batch)
        )
        async with self._engine.connect() as connection:
            due = [row._mapping for row in await connection.execute(statement)]
        attempted = 0
        for delivery in due:
            if await self._claim(delivery["id"], delivery["next_attempt_at"]):
                attempted += 1
                await self._send(delivery)
        return attempted

    async def _claim(self, delivery_id: int, due_at: datetime) -> bool:
        """Ours if no other sender claimed it since we read it (its due time moves on only when claimed)."""
        lease = self._clock() + timedelta(seconds=self._timeout + CLAIM_MARGIN_SECONDS)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                webhook_deliveries.update()
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.next_attempt_at == due_at,
                    webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
                )
                .values(next_attempt_at=lease)
            )
        return result.rowcount == 1

    async def _send(self, delivery: Any) -> None:
        body = with_photo_url(delivery["payload"], self._photo_url)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "hazard-detection-api-webhooks",
            SIGNATURE_HEADER: sign(delivery["secret"], body, timestamp),
            "Hazard-Event": delivery["event"],
            "Hazard-Delivery": str(delivery["id"]),
        }
        try:
            status = await self._post(delivery["url"], body, headers, self._timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # refused, unreachable, timed out, a URL urllib cannot open
            error = repr(exc)[:MAX_ERROR_CHARS]
        await self._settle(delivery, error)

    async def _settle(self, delivery: Any, error: str | None) -> None:
        attempts = delivery["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values["status"] = DeliveryStatus.DELIVERED.value
            self.delivered += 1
        elif attempts >= self._retries.max_attempts:
            values["status"] = DeliveryStatus.DEAD.value
            self.failed += 1
            log.warning("webhook_delivery_dead", delivery_id=delivery["id"], attempts=attempts, error=error)
        else:
            values["next_attempt_at"] = self._clock() + timedelta(seconds=self._retries.delay(attempts))
            log.info("webhook_delivery_retried", delivery_id=delivery["id"], attempts=attempts, error=error)
        async with self._engine.begin() as connection:
            await connection.execute(
                webhook_deliveries.update().where(webhook_deliveries.c.id == delivery["id"]).values(**values)
            )
