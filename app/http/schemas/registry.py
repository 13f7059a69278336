"""The hazard registry over HTTP: durable hazard records, their history, and an operator's verdict or close."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.services.registry.lifecycle import Category, Move, Status, allowed_moves
from app.services.registry.records import HazardEvent, HazardRecord

NOTE_MAX_CHARS = 2000


class RegistryHazard(BaseModel):
    id: int = Field(description="The registry's id (a number; the map's ids are hex strings).")
    label: str
    status: Status
    lat: float = Field(description="WGS-84 degrees: the map entry's position at its latest report.")
    lon: float = Field(description="WGS-84 degrees.")
    uncertainty_m: float | None = Field(description="How far off the position may be, metres; null when unknown.")
    first_reported: datetime
    last_reported: datetime
    updated_at: datetime = Field(description="The latest report or status change.")
    reports: int = Field(description="Reports counted: one per track (a vehicle's pass) that confirmed it.")
    best_photo_url: str | None
    allowed_moves: list[Move] = Field(description="The moves its status allows now.")

    @classmethod
    def of(cls, record: HazardRecord) -> RegistryHazard:
        return cls(
            id=record.id,
            label=record.label,
            status=record.status,
            lat=record.lat,
            lon=record.lon,
            uncertainty_m=record.uncertainty_m,
            first_reported=record.first_reported_at,
            last_reported=record.last_reported_at,
            updated_at=record.updated_at,
            reports=record.reports,
            best_photo_url=record.best_photo_url,
            allowed_moves=allowed_moves(record.status),
        )


class HazardHistoryEntry(BaseModel):
    at: datetime
    actor: str = Field(description="The operator who made the move, or `system`.")
    move: str = Field(description="`report` (its creation) or a lifecycle move.")
    from_status: Status | None
    to_status: Status
    category: Category | None
    note: str | None

    @classmethod
    def of(cls, event: HazardEvent) -> HazardHistoryEntry:
        return cls(
            at=event.at,
            actor=event.actor,
            move=event.move,
            from_status=event.from_status,
            to_status=event.to_status,
            category=None if event.category is None else Category(event.category),
            note=event.note,
        )


class RegistryHazardDetail(RegistryHazard):
    history: list[HazardHistoryEntry] = Field(description="Every move, oldest first (append-only).")


class RegistryHazardPage(BaseModel):
    hazards: list[RegistryHazard] = Field(description="Oldest id first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class VerdictIn(BaseModel):
    category: Category = Field(description="`not_an_issue` rejects the hazard; any other category verifies it.")
    note: str | None = Field(None, max_length=NOTE_MAX_CHARS)


class CloseIn(BaseModel):
    note: str | None = Field(None, max_length=NOTE_MAX_CHARS)
