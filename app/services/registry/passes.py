"""Passes: a session's camera came within range of a registry hazard. One pass per approach: it opens with the
first located frame in range and is recorded when the session's frames leave the range (or go quiet for
`gap_s`), with `saw_it` true when a frame in range detected the hazard's class. The store counts clean passes.

Camera coverage is the frame's GPS within `range_m` of the hazard; frames carry no field of view yet.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from app.services.core.errors import HazardNotFound, RegistryUnavailable
from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.queries import around, distance_m
from app.services.registry.records import HazardFilter, HazardRecord
from app.services.registry.store import HazardRegistry

log = structlog.get_logger(__name__)
CELL_DEGREES = 0.01  # hazards are read from the registry per cell of about 1 km, cached for `cache_s`
MAX_CELLS = 1024
MAX_SESSIONS = 10_000
MAX_PAGES_PER_CELL = 20


@dataclass(frozen=True)
class FrameSeen:
    """What a located frame tells the pass watcher: where and when, and which classes it detected."""

    session_id: str
    at: float  # epoch seconds
    lat: float
    lon: float
    labels: frozenset[str]
    tenant: str = LOCAL_TENANT  # the session's: its passes count on that tenant's hazards


@dataclass
class OpenPass:
    started_at: float
    last_at: float
    saw_it: bool
    tenant: str = LOCAL_TENANT


class PassWatcher:
    def __init__(
        self,
        registry: HazardRegistry,
        *,
        range_m: float,
        gap_s: float = 30.0,
        cache_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.range_m = range_m
        self._gap_s = gap_s
        self._cache_s = cache_s
        self._clock = clock
        self._cells: OrderedDict[tuple[str, int, int], tuple[float, list[HazardRecord]]] = OrderedDict()
        self._open: OrderedDict[str, dict[str, OpenPass]] = OrderedDict()  # session -> map key -> its pass
        self.recorded = 0
        self.lost = 0

    async def observe(self, frame: FrameSeen) -> None:
        try:
            nearby = await self._nearby(frame.tenant, frame.lat, frame.lon)
        except RegistryUnavailable:
            return  # no hazards to pass while the registry is down
        in_range = {h.map_key: h for h in nearby if distance_m(frame.lat, frame.lon, h.lat, h.lon) <= self.range_m}
        passes = self._session(frame.session_id)
        for map_key, open_pass in list(passes.items()):
            if map_key not in in_range or frame.at - open_pass.last_at > self._gap_s:
                del passes[map_key]
                await self._record(frame.session_id, map_key, open_pass)
        for map_key, hazard in in_range.items():
            open_pass = passes.setdefault(map_key, OpenPass(frame.at, frame.at, False, frame.tenant))
            open_pass.last_at = max(open_pass.last_at, frame.at)
            open_pass.saw_it = open_pass.saw_it or hazard.label in frame.labels

    async def flush(self) -> None:
        """Record every open pass (at stop: the frames that would close them are not coming)."""
        while self._open:
            session_id, passes = self._open.popitem(last=False)
            for map_key, open_pass in passes.items():
                await self._record(session_id, map_key, open_pass)

    def forget(self, lat: float, lon: float, tenant: str = LOCAL_TENANT) -> None:
        """A hazard of `tenant` was created or reopened there: the next frame nearby reads the registry again."""
        self._cells.pop((tenant, math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES)), None)

    def _session(self, session_id: str) -> dict[str, OpenPass]:
        passes = self._open.setdefault(session_id, {})
        self._open.move_to_end(session_id)
        while len(self._open) > MAX_SESSIONS:  # a session that stopped sending frames: its open passes go
            _, forgotten = self._open.popitem(last=False)
            self.lost += len(forgotten)
        return passes

    async def _record(self, session_id: str, map_key: str, open_pass: OpenPass) -> None:
        at = datetime.fromtimestamp(open_pass.last_at, UTC)
        try:
            await self._registry.record_pass(
                open_pass.tenant, map_key, session_id=session_id, at=at, saw_it=open_pass.saw_it
            )
        except HazardNotFound:
            return
        except RegistryUnavailable:
            self.lost += 1
            log.warning("registry_pass_lost", session_id=session_id, map_key=map_key)
            return
        self.recorded += 1

    async def _nearby(self, tenant: str, lat: float, lon: float) -> list[HazardRecord]:
        cell = (tenant, math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES))
        cached = self._cells.get(cell)
        now = self._clock()
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        hazards = await self._read_cell(cell)
        self._cells[cell] = (now, hazards)
        self._cells.move_to_end(cell)
        while len(self._cells) > MAX_CELLS:
            self._cells.popitem(last=False)
        return hazards

    async def _read_cell(self, cell: tuple[str, int, int]) -> list[HazardRecord]:
        """The cell's hazards of its tenant and those within range of its edges."""
        tenant, south, west = cell[0], cell[1] * CELL_DEGREES, cell[2] * CELL_DEGREES
        low, high = around(south, west, self.range_m), around(south + CELL_DEGREES, west + CELL_DEGREES, self.range_m)
        where = HazardFilter(tenant=tenant, bbox=(low[0], low[1], high[2], high[3]))
        hazards: list[HazardRecord] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES_PER_CELL):
            page = await self._registry.query(where, cursor=cursor)
            hazards += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        return hazards
