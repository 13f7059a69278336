"""Who did what, when: an append-only record of operator and admin actions (a key created or revoked, a model
activated, a verdict), kept in a Redis stream capped at `max_entries`, read newest first.

A stream rather than a list: its ids are ordered by Redis itself, so entries from many replicas come back in
the order Redis took them, and XADD's MAXLEN caps it in the same command. Any API key that slips into an
entry is cut to its public id first: the log is read by every admin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.typing import EncodableT

from app.services.core.errors import ValidationFailed
from app.services.core.types import RedisClient
from app.services.identity.key_format import redact_keys
from app.services.identity.redis_io import float_text, guarded

MAX_TEXT_CHARS = 256
MAX_DETAILS_CHARS = 4096
MAX_READ = 1000


@dataclass(frozen=True)
class AuditEntry:
    entry_id: str  # the stream id: unique and ordered
    at: float
    actor: str  # an operator's name or `key:<key id>`
    action: str  # e.g. `api_key.created`, `model.activated`, `hazard.verdict`
    target: str
    details: dict[str, Any] = field(default_factory=dict)


def _text(value: str, what: str) -> str:
    if not value or len(value) > MAX_TEXT_CHARS:
        raise ValidationFailed(f"An audit entry's {what} is 1-{MAX_TEXT_CHARS} characters.", details={"field": what})
    return redact_keys(value)


class AuditLog:
    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._key = f"{{{namespace}:audit}}:log"
        self._max_entries = max_entries
        self._clock = clock

    async def record(self, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> AuditEntry:
        details_text = redact_keys(json.dumps(details or {}, sort_keys=True, default=str))
        if len(details_text) > MAX_DETAILS_CHARS:
            raise ValidationFailed("An audit entry's details are too long.", details={"max": MAX_DETAILS_CHARS})
        fields = {
            "at": float_text(self._clock()),
            "actor": _text(actor, "actor"),
            "action": _text(action, "action"),
            "target": _text(target, "target"),
            "details": details_text,
        }
        # Exact trimming (not `~`): the cap is what an operator configured, and trimming one entry is cheap.
        encoded: dict[EncodableT, EncodableT] = {name: value for name, value in fields.items()}
        entry_id = await guarded(
            cast(Any, self._redis.xadd(self._key, encoded, maxlen=self._max_entries, approximate=False))
        )
        return _entry(entry_id, fields)

    async def latest(self, count: int = 50) -> list[AuditEntry]:
        """The newest `count` entries, newest first."""
        replies = await guarded(cast(Any, self._redis.xrevrange(self._key, count=max(1, min(count, MAX_READ)))))
        return [_entry(entry_id, fields) for entry_id, fields in replies]


def _entry(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        entry_id=entry_id,
        at=float(fields["at"]),
        actor=fields["actor"],
        action=fields["action"],
        target=fields["target"],
        details=json.loads(fields["details"]),
    )
