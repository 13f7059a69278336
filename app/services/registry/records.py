"""What the registry takes and hands back: plain frozen values, no ORM objects outside the store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from app.services.registry.lifecycle import Status

# What became of one sighting: a new hazard, one more report, a repeat of one already counted (idempotent
# replays), a hazard thought fixed or closed opened again, or a report at a rejected hazard's spot.
SightingOutcome = Literal["created", "counted", "duplicate", "reopened", "silenced"]

BBox = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat: GeoJSON's order (RFC 7946 §5)
# The address a reader may fetch a best photo at (a signed one where the service keeps its frames: AUTH_MODE=keys).
PhotoUrl = Callable[[str | None], str | None]


def same_url(url: str | None) -> str | None:
    return url


@dataclass(frozen=True)
class Sighting:
    tenant: str
    map_key: str
    label: str
    lat: float
    lon: float
    uncertainty_m: float | None
    at: datetime
    photo_url: str | None = None
    # Map entries gone into this one (their last report moved here): their records are folded into this one's.
    absorbs: tuple[str, ...] = ()
    session_id: str | None = None  # whose report: its next pass may take it back (`evidence.py`)
    # Where the map entry is in the fleet map's frame (`MapHazard.frame_lat`): what passes compare detections with.
    frame_lat: float | None = None
    frame_lon: float | None = None
    # Not a report: the entry's position changed (a report moved on from it); its row takes it, nothing is counted.
    position_only: bool = False


@dataclass(frozen=True)
class HazardRecord:
    id: int
    tenant: str
    map_key: str
    label: str
    status: Status
    lat: float
    lon: float
    uncertainty_m: float | None
    first_reported_at: datetime
    last_reported_at: datetime
    updated_at: datetime
    reports: int
    best_photo_url: str | None
    frame_lat: float | None = None  # in the fleet map's frame (`Sighting`); None: as `lat` and `lon`
    frame_lon: float | None = None

    @property
    def in_frame(self) -> HazardRecord:
        """This record placed where the fleet map's frame has it, for comparing with a session's detections."""
        if self.frame_lat is None or self.frame_lon is None:
            return self
        return replace(self, lat=self.frame_lat, lon=self.frame_lon)

    @classmethod
    def from_row(cls, row: Any, photo_url: Callable[[str | None], str | None] | None = None) -> HazardRecord:
        """`photo_url`: the address handed out for the stored best photo (a signed one), in the same pass."""
        fields = dict(row._mapping)
        fields["status"] = Status(fields["status"])
        if photo_url is not None:
            fields["best_photo_url"] = photo_url(fields["best_photo_url"])
        return cls(**{name: fields[name] for name in RECORD_FIELDS})


RECORD_FIELDS = tuple(HazardRecord.__dataclass_fields__)


@dataclass(frozen=True)
class HazardEvent:
    """One entry of a hazard's append-only history: who moved it, when, from what to what, and why."""

    at: datetime
    actor: str
    move: str
    from_status: Status | None
    to_status: Status
    category: str | None
    note: str | None


@dataclass(frozen=True)
class HazardFilter:
    tenant: str | None = None  # None: every tenant (an operator's view)
    status: Status | None = None
    label: str | None = None
    since: datetime | None = None  # last reported at or after
    bbox: BBox | None = None


@dataclass(frozen=True)
class Page:
    items: list[HazardRecord]
    next_cursor: str | None  # pass back as `cursor` for the next page; None on the last one
