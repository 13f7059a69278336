"""The registry's tables (SQLAlchemy Core). The migrations in `migrations/versions` create exactly these; a test
holds the two equal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no zone and hands back naive values."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = sa.MetaData()

hazards = sa.Table(
    "hazards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("map_key", sa.String(128), nullable=False),  # the Redis map entry this row mirrors
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("lat", sa.Double, nullable=False),
    sa.Column("lon", sa.Double, nullable=False),
    sa.Column("uncertainty_m", sa.Double, nullable=True),
    sa.Column("first_reported_at", UtcDateTime, nullable=False),
    sa.Column("last_reported_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),  # last report or status change (Open311 updated_datetime)
    sa.Column("reports", sa.Integer, nullable=False),
    sa.Column("best_photo_url", sa.Text, nullable=True),
    sa.Column("frame_lat", sa.Double, nullable=True),  # where the fleet map's frame has it (passes compare there)
    sa.Column("frame_lon", sa.Double, nullable=True),
    sa.UniqueConstraint("tenant", "map_key", name="uq_hazards_tenant_map_key"),
    sa.Index("ix_hazards_lat_lon", "lat", "lon"),
    sa.Index("ix_hazards_tenant_status", "tenant", "status"),
    sa.Index("ix_hazards_last_reported_at", "last_reported_at"),
)

hazard_events = sa.Table(
    "hazard_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("move", sa.String(32), nullable=False),
    sa.Column("from_status", sa.String(32), nullable=True),  # None for the hazard's creation
    sa.Column("to_status", sa.String(32), nullable=False),
    sa.Column("category", sa.String(32), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Index("ix_hazard_events_hazard_id", "hazard_id", "id"),
)

passes = sa.Table(
    "passes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("saw_it", sa.Boolean, nullable=False),
    sa.UniqueConstraint("hazard_id", "session_id", "at", name="uq_passes_hazard_session_at"),  # replay-safe
)

sightings = sa.Table(  # each counted report: which session made it (None: a source that does not say), and when
    "sightings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_sightings_hazard_at", "hazard_id", "at"),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),  # the HMAC key: kept as is, the signature needs it
    sa.Column("events", sa.String(256), nullable=False),  # comma-separated event names it is sent
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),  # deleted by an operator: nothing more is sent to it
)

# The outbox: a row per (event, webhook), written in the transaction that made the change; the sender POSTs it.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the JSON body exactly as sent and signed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, dead
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
)
