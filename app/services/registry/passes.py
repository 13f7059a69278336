"""Passes: a session's camera drove past a registry hazard with it in view. One pass per approach: it opens with the
first located frame within `range_m` and is closed when the session's frames leave the range by more than
`RANGE_MARGIN_M` (or go quiet for `gap_s`). It counts only if the camera covered the hazard: some frame had it in
view (ahead, no more than `range_m`, inside the field of view, widened by `VIEW_MARGIN_M` for GPS error) and a later
frame had it behind (the vehicle drove past it). `saw_it` is true when a frame that had it in view detected its class
there. A pass that saw it always counts (it is a sighting); one that neither saw nor covered it is dropped
(`uncovered`): a session that ended or turned off before the hazard, started past it or drove away from it says
nothing about it. The store counts clean passes.

The camera looks along the frame's heading, else along the course from the session's previous fix (at least
`MIN_COURSE_M` away); a frame with neither cannot have anything in view.

Where a detection is: with the session's camera known (the key's device profile, or the one tracking told the feed),
where its box touches the road (`positions.ground_offset`). The pass keeps, per frame, those of the hazard's class
near it, and decides when it ends. Less the session's offset, a detection within `SEEN_WITHIN_M` of it and nearer
it than any other hazard of its class (a rival) is its. It was seen when one frame had one of its and one of a
rival's (two objects: both there), or when at least `SEEN_SHARE` of the detections on it or its rivals were its:
one object beside its repaired twin scatters a few detections nearer the twin, not half. The offset is how far,
north and east, the session's detections sit from hazards they clearly are (no other of the class near), the median
of the latest: the vehicle's GPS bias against the one the registry's positions carry. Once it is off, a repaired
pothole whose twin stays 1-3 m beside it, or one further along the same bearing, is not seen in the twin's
detections; the hazards passed after it count too. A pass with a rival that ends before the session has an offset
waits for it (parked, for at most `gap_s` of the session's frames): without one, any detection within
`SEEN_WITHIN_M` sees it (twins both seen: GPS cannot tell them apart). Without a camera: a detection of the class in
the hazard's direction (within `SEEN_WITHIN_M` of it at its distance, the box's column read through the field of
view).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from app.services.core.errors import HazardNotFound, RegistryUnavailable
from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.lifecycle import Status
from app.services.registry.queries import around, distance_m
from app.services.registry.records import HazardFilter, HazardRecord
from app.services.registry.store import HazardRegistry

log = structlog.get_logger(__name__)
METRES_PER_DEGREE = 111_320.0
VIEW_MARGIN_M = 2.0  # a hazard this far outside the field of view's edge may still be in it (GPS error)
# A pass ends when a frame has the hazard this far past the range: a fix's noise at the range's edge split one
# approach into a one-frame pass (its one far-off detection, without the rival beside it yet, "saw" the hazard).
RANGE_MARGIN_M = VIEW_MARGIN_M
# A detection whose bearing passes this close to the hazard (at the hazard's distance) is of the hazard: the vehicle's
# GPS bias (~1.5 m) and the hazard's own position error. Same-class hazards closer together than this are one here.
SEEN_WITHIN_M = 4.0
MIN_COURSE_M = 2.0  # fixes closer than this give no course to look along
# One object beside a hazard's twin: its detections scatter, a few nearer the twin. Without a frame showing both, the
# twin is seen when at least this share of the detections placed on either is nearer it.
SEEN_SHARE = 0.5
CLEAR_OF_M = 2 * SEEN_WITHIN_M  # a detection with no other hazard of its class this near is clearly its nearest's
OFFSET_SAMPLES = 30  # the session's offset is the median of its latest clear detections' ...
MIN_OFFSET_SAMPLES = 5  # ... once it has this many
MAX_PARKED = 64  # passes a session without an offset yet keeps undecided
# A pass keeps its latest frames' placed detections: a car waiting in view of a hazard sends frames for minutes.
PLACED_KEPT = 64
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
    heading: float | None = None  # degrees clockwise from north, as the client gave it
    # Per detection, its label and where its box's centre is across the image (-1 left edge, 0 centre, 1 right);
    # None when the frame's width is not known (then any detection of the label counts).
    across: tuple[tuple[str, float], ...] | None = None
    # Per detection placed on the road (the session's camera known), its label and metres ahead and to the right.
    ground: tuple[tuple[str, float, float], ...] | None = None


Offset = tuple[float, float]  # metres north and east


@dataclass
class OpenPass:
    started_at: float
    last_at: float
    saw_it: bool  # a detection in its direction (no camera known), or placed on it (decided at the end: `saw`)
    tenant: str = LOCAL_TENANT
    in_view: bool = False  # some frame had it ahead, in the field of view
    passed: bool = False  # a frame after that had it behind: the camera drove past it
    # Per frame that had it in view, its detections of its class placed on the road near it, as offsets from it; and
    # the other hazards of its class in range, as offsets from it (kept to the pass's end: the session's offset may
    # come later)
    placed: deque[tuple[Offset, ...]] = field(default_factory=lambda: deque(maxlen=PLACED_KEPT))
    rivals: dict[str, Offset] = field(default_factory=dict)

    def saw(self, offset: Offset | None) -> bool:
        """Whether the pass saw it: a detection in its direction, else by its detections placed on the road (less
        the session's `offset`) within SEEN_WITHIN_M of it: any, without an offset (twins both seen); with one,
        those nearer it than any rival are its. It was seen when a frame had one of its and one of a rival's (two
        objects), or when at least SEEN_SHARE of the detections on it or its rivals were its."""
        if self.saw_it:
            return True
        if offset is None:
            return any(math.hypot(north, east) <= SEEN_WITHIN_M for frame in self.placed for north, east in frame)
        its = others = 0
        for frame in self.placed:
            frame_its, frame_others = self._tally(frame, offset)
            if frame_its and frame_others:
                return True
            its, others = its + frame_its, others + frame_others
        return its > 0 and its >= SEEN_SHARE * (its + others)

    def needs_offset(self) -> bool:
        """Whether the session's offset could decide it: detections placed near it and a rival to tell apart."""
        return not self.saw_it and bool(self.rivals) and bool(self.placed)

    def _tally(self, frame: tuple[Offset, ...], offset: Offset) -> tuple[int, int]:
        """How many of a frame's detections are its, and how many a rival's (within SEEN_WITHIN_M, nearer it)."""
        its = others = 0
        for placed_north, placed_east in frame:
            north, east = placed_north - offset[0], placed_east - offset[1]
            apart = math.hypot(north, east)
            nearest_rival = min((math.hypot(north - n, east - e) for n, e in self.rivals.values()), default=math.inf)
            if apart <= SEEN_WITHIN_M and apart <= nearest_rival:
                its += 1
            elif nearest_rival <= SEEN_WITHIN_M:
                others += 1
        return its, others


@dataclass
class SessionPasses:
    passes: dict[str, OpenPass] = field(default_factory=dict)  # map key -> its pass
    fix: tuple[float, float] | None = None  # the last frame's position: the course to the next one
    course: float | None = None
    # Clear detections' offsets from the hazards they are (see the module's docstring)
    offsets: deque[Offset] = field(default_factory=lambda: deque(maxlen=OFFSET_SAMPLES))
    # Passes ended before the session had an offset that it would decide: recorded once it has one (or after gap_s)
    parked: list[tuple[str, OpenPass]] = field(default_factory=list)

    def offset(self) -> Offset | None:
        """The session's GPS against the registry's positions; None until MIN_OFFSET_SAMPLES clear detections."""
        if len(self.offsets) < MIN_OFFSET_SAMPLES:
            return None
        return statistics.median(n for n, _ in self.offsets), statistics.median(e for _, e in self.offsets)


def north_east(lat: float, lon: float, to_lat: float, to_lon: float) -> tuple[float, float]:
    """(lat, lon) -> (to_lat, to_lon) in metres north and east (flat earth over metres)."""
    return (to_lat - lat) * METRES_PER_DEGREE, (to_lon - lon) * METRES_PER_DEGREE * math.cos(math.radians(lat))


def ahead_right(lat: float, lon: float, heading: float, to_lat: float, to_lon: float) -> tuple[float, float]:
    """(lat, lon) -> (to_lat, to_lon) in metres along `heading` and to its right (flat earth over metres)."""
    north, east = north_east(lat, lon, to_lat, to_lon)
    bearing = math.radians(heading)
    return north * math.cos(bearing) + east * math.sin(bearing), east * math.cos(bearing) - north * math.sin(bearing)


def clear_offsets(frame: FrameSeen, placed: list[tuple[str, Offset]], hazards: dict[str, HazardRecord]) -> list[Offset]:
    """The offsets of the frame's placed detections from the hazards they clearly are: the one of its class within
    CLEAR_OF_M of it (with two or more, it could be either)."""
    offsets = []
    for label, (north, east) in placed:
        near = [
            (north - h_north, east - h_east)
            for hazard in hazards.values()
            if hazard.label == label
            for h_north, h_east in [north_east(frame.lat, frame.lon, hazard.lat, hazard.lon)]
            if math.hypot(north - h_north, east - h_east) <= CLEAR_OF_M
        ]
        if len(near) == 1:
            offsets.append(near[0])
    return offsets


def rotated(heading: float, ahead: float, right: float) -> tuple[float, float]:
    """Metres `ahead` along `heading` and `right` of it, as metres north and east."""
    bearing = math.radians(heading)
    return ahead * math.cos(bearing) - right * math.sin(bearing), ahead * math.sin(bearing) + right * math.cos(bearing)


def course_between(start: tuple[float, float], end: tuple[float, float]) -> float | None:
    north = (end[0] - start[0]) * METRES_PER_DEGREE
    east = (end[1] - start[1]) * METRES_PER_DEGREE * math.cos(math.radians(start[0]))
    if math.hypot(north, east) < MIN_COURSE_M:
        return None
    return math.degrees(math.atan2(east, north)) % 360


class PassWatcher:
    def __init__(
        self,
        registry: HazardRegistry,
        *,
        range_m: float,
        hfov_deg: float = 60.0,
        gap_s: float = 30.0,
        cache_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.range_m = range_m
        self._half_view = math.tan(math.radians(hfov_deg) / 2)
        self._gap_s = gap_s
        self._cache_s = cache_s
        self._clock = clock
        self._cells: OrderedDict[tuple[str, int, int], tuple[float, list[HazardRecord]]] = OrderedDict()
        self._open: OrderedDict[str, SessionPasses] = OrderedDict()
        self.recorded = 0
        self.lost = 0
        self.uncovered = 0  # passes dropped: the camera never had the hazard in view and drove past it

    async def observe(self, frame: FrameSeen) -> None:
        try:
            nearby = await self._nearby(frame.tenant, frame.lat, frame.lon)
        except RegistryUnavailable:
            return  # no hazards to pass while the registry is down
        apart = {h.map_key: distance_m(frame.lat, frame.lon, h.lat, h.lon) for h in nearby}
        in_range = {h.map_key: h for h in nearby if apart[h.map_key] <= self.range_m}
        session = self._session(frame.session_id)
        heading = self._heading(session, frame)
        passes = session.passes
        for map_key, open_pass in list(passes.items()):
            left = apart.get(map_key, math.inf) > self.range_m + RANGE_MARGIN_M
            if left or frame.at - open_pass.last_at > self._gap_s:
                del passes[map_key]
                if session.offset() is None and open_pass.needs_offset():
                    session.parked.append((map_key, open_pass))
                else:
                    await self._record(frame.session_id, map_key, open_pass, session.offset())
        if heading is None:
            placed: list[tuple[str, Offset]] = []
        else:
            placed = [(label, rotated(heading, ahead, right)) for label, ahead, right in frame.ground or ()]
            session.offsets.extend(clear_offsets(frame, placed, in_range))
        if session.parked and (
            session.offset() is not None
            or len(session.parked) > MAX_PARKED
            or frame.at - session.parked[0][1].last_at > self._gap_s
        ):
            await self._record_parked(frame.session_id, session)
        for map_key, hazard in in_range.items():
            open_pass = passes.setdefault(map_key, OpenPass(frame.at, frame.at, False, frame.tenant))
            open_pass.last_at = max(open_pass.last_at, frame.at)
            if heading is None:
                continue
            ahead, right = ahead_right(frame.lat, frame.lon, heading, hazard.lat, hazard.lon)
            if ahead > 0 and abs(right) <= ahead * self._half_view + VIEW_MARGIN_M:
                open_pass.in_view = True
                if frame.ground is None:
                    open_pass.saw_it = open_pass.saw_it or self._detected(frame, hazard.label, ahead, right)
                else:
                    self._place(open_pass, frame, hazard, placed, in_range)
            elif ahead <= 0 and open_pass.in_view:
                open_pass.passed = True

    async def flush(self) -> None:
        """Record every open pass (at stop: the frames that would close them are not coming)."""
        while self._open:
            session_id, session = self._open.popitem(last=False)
            for map_key, open_pass in session.passes.items():
                await self._record(session_id, map_key, open_pass, session.offset())
            await self._record_parked(session_id, session)

    async def _record_parked(self, session_id: str, session: SessionPasses) -> None:
        parked, session.parked = session.parked, []
        for map_key, open_pass in parked:
            await self._record(session_id, map_key, open_pass, session.offset())

    @staticmethod
    def _place(
        open_pass: OpenPass,
        frame: FrameSeen,
        hazard: HazardRecord,
        placed: list[tuple[str, Offset]],
        in_range: dict[str, HazardRecord],
    ) -> None:
        """Keep the frame's detections of the hazard's class near it, and its rivals, as offsets from it."""
        north, east = north_east(frame.lat, frame.lon, hazard.lat, hazard.lon)
        near = tuple(
            (placed_north - north, placed_east - east)
            for label, (placed_north, placed_east) in placed
            if label == hazard.label and math.hypot(placed_north - north, placed_east - east) <= CLEAR_OF_M
        )
        if near:
            open_pass.placed.append(near)
        for key, rival in in_range.items():
            if rival.label == hazard.label and key != hazard.map_key:
                rival_north, rival_east = north_east(frame.lat, frame.lon, rival.lat, rival.lon)
                open_pass.rivals[key] = (rival_north - north, rival_east - east)

    def _detected(self, frame: FrameSeen, label: str, ahead: float, right: float) -> bool:
        """The frame detected `label` in the hazard's direction (`ahead`, `right` of the camera)."""
        if frame.across is None:
            return label in frame.labels
        return any(
            seen == label and abs(x * self._half_view * ahead - right) <= SEEN_WITHIN_M for seen, x in frame.across
        )

    @staticmethod
    def _heading(session: SessionPasses, frame: FrameSeen) -> float | None:
        """Where the camera looks: the frame's heading, else the course from the session's earlier fix."""
        fix = (frame.lat, frame.lon)
        if session.fix is not None and (course := course_between(session.fix, fix)) is not None:
            session.course = course
            session.fix = fix
        elif session.fix is None:
            session.fix = fix
        return frame.heading if frame.heading is not None else session.course

    def forget(self, lat: float, lon: float, tenant: str = LOCAL_TENANT) -> None:
        """A hazard of `tenant` was created or reopened there: the next frame nearby reads the registry again."""
        self._cells.pop((tenant, math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES)), None)

    def _session(self, session_id: str) -> SessionPasses:
        session = self._open.setdefault(session_id, SessionPasses())
        self._open.move_to_end(session_id)
        while len(self._open) > MAX_SESSIONS:  # a session that stopped sending frames: its open passes go
            _, forgotten = self._open.popitem(last=False)
            self.lost += len(forgotten.passes) + len(forgotten.parked)
        return session

    async def _record(self, session_id: str, map_key: str, open_pass: OpenPass, offset: Offset | None) -> None:
        saw_it = open_pass.saw(offset)
        if not (saw_it or (open_pass.in_view and open_pass.passed)):
            self.uncovered += 1
            return
        at = datetime.fromtimestamp(open_pass.last_at, UTC)
        try:
            await self._registry.record_pass(open_pass.tenant, map_key, session_id=session_id, at=at, saw_it=saw_it)
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
        """The cell's hazards of its tenant and those within range of its edges, each where the fleet map's frame has
        it (hazards side by side keep their places there); not the closed ones (repaired, or a duplicate of another):
        nothing to pass, and no rival of what is there."""
        tenant, south, west = cell[0], cell[1] * CELL_DEGREES, cell[2] * CELL_DEGREES
        low, high = around(south, west, self.range_m), around(south + CELL_DEGREES, west + CELL_DEGREES, self.range_m)
        where = HazardFilter(tenant=tenant, bbox=(low[0], low[1], high[2], high[3]))
        hazards: list[HazardRecord] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES_PER_CELL):
            page = await self._registry.query(where, cursor=cursor)
            hazards += [hazard.in_frame for hazard in page.items if hazard.status is not Status.CLOSED]
            cursor = page.next_cursor
            if cursor is None:
                break
        return hazards
