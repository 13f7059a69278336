"""Per-key limits: a fleet behind one carrier NAT is many devices, so a key, not an address, gets a budget.

None means "the deployment's default applies". Values come from admins (JSON over the API, the CLI) and from
Redis: both go through `from_json`, which refuses anything out of range with a 422 naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from app.services.core.errors import ValidationFailed

MAX_FRAMES_PER_SECOND = 1000.0
MAX_SESSIONS_PER_MINUTE = 10_000.0
MAX_JOBS_IN_FLIGHT = 10_000


def checked_number(value: object, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number within [low, high] (or (low, high]); bools are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a number.", details={"field": field})
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValidationFailed(f"{field} must be within {bounds}.", details={"field": field, "min": low, "max": high})
    return float(value)


def refuse_unknown_fields(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValidationFailed(f"Unknown fields in {where}: {', '.join(unknown)}.", details={"fields": unknown})


@dataclass(frozen=True)
class KeyLimits:
    frames_per_second: float | None = None
    sessions_per_minute: float | None = None
    jobs_in_flight: int | None = None

    def __post_init__(self) -> None:
        # Stored as floats whatever JSON gave (5 or 5.0): equal limits compare and serialise equal.
        if self.frames_per_second is not None:
            rate = checked_number(self.frames_per_second, "frames_per_second", 0, MAX_FRAMES_PER_SECOND, low_open=True)
            object.__setattr__(self, "frames_per_second", rate)
        if self.sessions_per_minute is not None:
            rate = checked_number(
                self.sessions_per_minute, "sessions_per_minute", 0, MAX_SESSIONS_PER_MINUTE, low_open=True
            )
            object.__setattr__(self, "sessions_per_minute", rate)
        if self.jobs_in_flight is not None:
            if isinstance(self.jobs_in_flight, bool) or not isinstance(self.jobs_in_flight, int):
                raise ValidationFailed("jobs_in_flight must be an integer.", details={"field": "jobs_in_flight"})
            checked_number(self.jobs_in_flight, "jobs_in_flight", 1, MAX_JOBS_IN_FLIGHT)

    @classmethod
    def from_json(cls, data: object) -> KeyLimits:
        if not isinstance(data, dict):
            raise ValidationFailed("limits must be an object.", details={"field": "limits"})
        refuse_unknown_fields(data, {"frames_per_second", "sessions_per_minute", "jobs_in_flight"}, "limits")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}
