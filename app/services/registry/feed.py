"""The registry's feed from the detection path: every merge into the fleet's map becomes a sighting, every located
frame a possible pass. Tracking tells the feed (`TrackingObserver`: it returns at once, the request never waits on
the database); one background task writes them, sightings through the `SightingBuffer` (kept and replayed while
the database is down).

A sighting is one track's report of a map entry: its time is the track's first frame, so the frames after it
repeat the same report (counted once), while a photo that lands later still reaches the row. A report that moves
on to another entry (a track's first, far-off report put into a twin's entry) changed the entry it left: that
entry's row takes its position as it is now (`Sighting.position_only`), or the row keeps the far-off report's pull.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from app.services.core.errors import ApiError
from app.services.registry.passes import FrameSeen, PassWatcher
from app.services.registry.pending import SightingBuffer
from app.services.registry.records import Sighting
from app.services.tracking.hazard_map import MapHazard
from app.services.tracking.positions import Camera, ground_offset
from app.services.tracking.types import Box, FrameInput
from app.services.tracking.types import HazardRecord as TrackedHazard

log = structlog.get_logger(__name__)
REMEMBERED_SIGHTINGS = 10_000
REMEMBERED_CAMERAS = 10_000  # sessions whose camera tracking has told (the latest)

# The map entry `map_id` of a tenant's map as it is now (fused position, best photo), looked up near a report of it:
# (map_id, lat, lon, tenant).
ReadEntry = Callable[[str, float, float, str], Awaitable[MapHazard | None]]


def across_image(box: Box, width: int) -> float:
    """Where the box's centre is across the image: -1 at the left edge, 0 in the middle, 1 at the right edge."""
    return ((box[0] + box[2]) / 2 - width / 2) / (width / 2)


def on_ground(frame: FrameInput, camera: Camera | None) -> tuple[tuple[str, float, float], ...] | None:
    """Each detection's label and where its box touches the road, metres ahead and right (None without a camera);
    a box whose bottom is at or above the horizon is left out."""
    if camera is None or not frame.width or not frame.height:
        return None
    spots = (
        (o.label, ground_offset((o.box[0] + o.box[2]) / 2, o.box[3], frame.width, frame.height, camera))
        for o in frame.observations
    )
    return tuple((label, *spot) for label, spot in spots if spot is not None)


@dataclass(frozen=True)
class Mapped:
    source_id: str
    map_id: str
    record: TrackedHazard
    tenant: str
    emptied: tuple[str, ...] = ()  # map entries gone into `map_id`: their records are folded into its


class RegistryFeed:
    def __init__(self, buffer: SightingBuffer, passes: PassWatcher, *, queue_limit: int = 10_000) -> None:
        self.buffer = buffer
        self.passes = passes
        self._queue: deque[Mapped | FrameSeen] = deque()
        self._queue_limit = queue_limit
        self._wake = asyncio.Event()
        self._sent: OrderedDict[tuple[str, str, float, str | None], None] = OrderedDict()  # skip repeats of a report
        self._entry_of: OrderedDict[tuple[str, str, str], str] = OrderedDict()  # (tenant, session, track) -> entry
        self._cameras: OrderedDict[str, Camera] = OrderedDict()
        self.dropped = 0  # events past `queue_limit`: the map keeps the hazard, its next report brings it back

    def __len__(self) -> int:
        return len(self._queue)

    # TrackingObserver: called on the request path, so only a queue append each

    def framed(self, session_id: str, frame: FrameInput, tenant: str, camera: Camera | None = None) -> None:
        """`camera`: the key's device profile's; else the one tracking last told for the session (`calibrated`)."""
        camera = camera or self.camera_of(session_id)
        if frame.lat is not None and frame.lon is not None:
            labels = frozenset(o.label for o in frame.observations)
            across = (
                None
                if not frame.width
                else tuple((o.label, across_image(o.box, frame.width)) for o in frame.observations)
            )
            ground = on_ground(frame, camera)
            self._put(
                FrameSeen(session_id, frame.at, frame.lat, frame.lon, labels, tenant, frame.heading, across, ground)
            )

    def mapped(
        self, source_id: str, map_id: str, record: TrackedHazard, tenant: str, emptied: tuple[str, ...] = ()
    ) -> None:
        self._put(Mapped(source_id, map_id, record, tenant, emptied))

    def camera_of(self, session_id: str) -> Camera | None:
        """The camera tracking last told for the session, if it still remembers one."""
        return self._cameras.get(session_id)

    def calibrated(self, session_id: str, camera: Camera) -> None:
        self._cameras[session_id] = camera
        self._cameras.move_to_end(session_id)
        while len(self._cameras) > REMEMBERED_CAMERAS:
            self._cameras.popitem(last=False)

    def _put(self, event: Mapped | FrameSeen) -> None:
        if len(self._queue) >= self._queue_limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._wake.set()

    # The background task

    async def run(self, read_entry: ReadEntry) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain(read_entry)

    async def drain(self, read_entry: ReadEntry) -> int:
        """Write what is queued, oldest first; returns how many events were handled."""
        handled = 0
        while self._queue:
            event = self._queue.popleft()
            try:
                if isinstance(event, Mapped):
                    await self._sight(event, read_entry)
                else:
                    await self.passes.observe(event)
            except Exception:  # one bad event must not end the feed for the life of the process
                log.exception("registry_feed_event_failed", event=type(event).__name__)
            handled += 1
        return handled

    async def _sight(self, event: Mapped, read_entry: ReadEntry) -> None:
        record = event.record
        key = (event.tenant, event.map_id, record.first_seen, record.best_frame_url)
        if record.lat is None or record.lon is None:
            return
        await self._left(event, record.lat, record.lon, read_entry)
        if key in self._sent and not event.emptied:
            return
        entry = await self._entry(read_entry, event.map_id, event.tenant, record.lat, record.lon)
        sighting = Sighting(
            tenant=event.tenant,
            map_key=event.map_id,
            label=record.label,
            lat=record.lat if entry is None else entry.lat,
            lon=record.lon if entry is None else entry.lon,
            uncertainty_m=record.position_uncertainty_m if entry is None else entry.position_uncertainty_m,
            at=datetime.fromtimestamp(record.first_seen, UTC),
            photo_url=(entry.best_frame_url if entry is not None else None) or record.best_frame_url,
            absorbs=event.emptied,
            session_id=event.source_id,
            frame_lat=None if entry is None else entry.frame_lat,
            frame_lon=None if entry is None else entry.frame_lon,
        )
        outcome = await self.buffer.report(sighting)  # written now, or kept and replayed: the buffer's either way
        if outcome in ("created", "reopened") or event.emptied:
            self.passes.forget(sighting.lat, sighting.lon, event.tenant)
        self._sent[key] = None
        while len(self._sent) > REMEMBERED_SIGHTINGS:
            self._sent.popitem(last=False)

    async def _left(self, event: Mapped, lat: float, lon: float, read_entry: ReadEntry) -> None:
        """The report's previous entry, when it moved on from one that is still on the map: its row takes the
        entry's position as it is without the report."""
        source = (event.tenant, event.source_id, event.record.hazard_id)
        previous = self._entry_of.pop(source, None)
        self._entry_of[source] = event.map_id
        while len(self._entry_of) > REMEMBERED_SIGHTINGS:
            self._entry_of.popitem(last=False)
        if previous is None or previous == event.map_id or previous in event.emptied:
            return
        entry = await self._entry(read_entry, previous, event.tenant, lat, lon)
        if entry is not None:
            await self.buffer.report(
                Sighting(
                    event.tenant,
                    previous,
                    entry.label,
                    entry.lat,
                    entry.lon,
                    entry.position_uncertainty_m,
                    datetime.fromtimestamp(event.record.first_seen, UTC),
                    frame_lat=entry.frame_lat,
                    frame_lon=entry.frame_lon,
                    position_only=True,
                )
            )

    @staticmethod
    async def _entry(read_entry: ReadEntry, map_id: str, tenant: str, lat: float, lon: float) -> MapHazard | None:
        try:
            return await read_entry(map_id, lat, lon, tenant)
        except ApiError as exc:  # the map cannot be read now: the report's own position and photo will do
            log.warning("registry_map_entry_unread", map_id=map_id, error=exc.code)
            return None
