"""Instants as the command line and track files write them: ISO-8601 (UTC when no offset is given) or seconds
since the Unix epoch."""

from __future__ import annotations

from datetime import UTC, datetime


def epoch_seconds(text: str) -> float:
    """`2026-03-01T10:00:00Z`, `2026-03-01 10:00:00.5+01:00`, `2026-03-01T10:00:00` (UTC) or `1772359200.5`."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO-8601 time nor seconds since the epoch") from None
    return as_utc(moment).timestamp()


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
