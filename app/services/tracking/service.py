"""Tracking for the detection path and the hazard routes: a frame's detections become hazards of its session,
confirmed hazards with a location go on the fleet's map, and both are read back as records or GeoJSON.

A frame whose association Redis cannot take now (degraded mode) is answered without hazard ids; its update is
kept with its history write (`PendingWrite.tracking`) and replayed before it, so the session's hazards are whole
once Redis is back. Replaying is idempotent: an update applied once is recognised by its id.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import HazardMapUnavailable, SessionStoreUnavailable, ValidationFailed
from app.services.core.types import RecordUploadUrl, RedisClient, RedisObserver
from app.services.identity.principal import LOCAL_TENANT
from app.services.inference.types import Detection
from app.services.sessions.store import SessionStore
from app.services.tracking.hazard_map import HazardMap, MapHazard, parse_bbox, parse_near
from app.services.tracking.store import Associated, SessionTracks, upload_url
from app.services.tracking.types import (
    Assignment,
    FrameInput,
    FrameMeta,
    HazardRecord,
    TrackParams,
    frame_time,
    observation_of,
)
from app.settings import TrackingSettings, UploadSettings

log = structlog.get_logger(__name__)
HAZARD_ID_BYTES = 8
DEFAULT_NEAR_RADIUS_M = 100.0


def new_hazard_id() -> str:
    return secrets.token_hex(HAZARD_ID_BYTES)


def frame_input(
    request_id: str,
    detections: Sequence[Detection],
    meta: FrameMeta,
    *,
    received_at: float,
    model: str = "",
    media_id: str = "",
) -> FrameInput:
    """A frame as the matcher sees it: its time is the capture time when the client gives one, else `received_at`;
    every detection carries a fresh hazard id, used if it starts a track."""
    at = frame_time(meta.captured_at if meta.captured_at is not None else received_at)
    observations = tuple(observation_of(d, new_hazard_id()) for d in detections)
    lat, lon = (meta.lat, meta.lon) if meta.located else (None, None)
    return FrameInput(request_id, at, observations, lat, lon, model, media_id)


@dataclass(frozen=True)
class Tracked:
    """`assignments` per detection, in order; None when Redis could not take the update now and `kept` holds it
    (to travel with the frame's history write)."""

    assignments: list[Assignment] | None
    kept: str | None = None

    @property
    def upload_wanted(self) -> bool | None:
        """Whether the frame is a hazard's frame to upload; None when tracking could not decide."""
        return None if self.assignments is None else any(a.upload for a in self.assignments)


class TrackingObserver(Protocol):
    """Told what tracking did, without waiting on it (e.g. the hazard registry's feed): both must return at once."""

    def framed(self, session_id: str, frame: FrameInput, tenant: str) -> None:
        """A frame of the tenant's session, with or without detections (a camera that saw nothing is news too)."""

    def mapped(self, source_id: str, map_id: str, record: HazardRecord, tenant: str) -> None:
        """`record` of `source_id` was merged into the entry `map_id` of `tenant`'s map."""


class TrackingService:
    def __init__(
        self,
        sessions: SessionStore,
        tracks: SessionTracks,
        hazard_map: HazardMap,
        observer: TrackingObserver | None = None,
    ) -> None:
        self._sessions = sessions
        self._tracks = tracks
        self._map = hazard_map
        self._observer = observer

    @property
    def params(self) -> TrackParams:
        return self._tracks.params

    async def track(self, session_id: str, frame: FrameInput, tenant: str = LOCAL_TENANT) -> Tracked:
        """Associate the frame now; if Redis is down, keep the update for replay instead. `tenant`: the session's,
        whose map its hazards go on."""
        if self._observer is not None:
            self._observer.framed(session_id, frame, tenant)
        if not frame.observations:
            return Tracked([])  # nothing to associate; stale tracks are closed by the next frame's time
        update = json.dumps({"update_id": secrets.token_hex(8), "frame": frame.as_json(), "tenant": tenant})
        try:
            return Tracked(await self.apply(session_id, update))
        except SessionStoreUnavailable:
            return Tracked(None, update)

    async def apply(self, session_id: str, update: str) -> list[Assignment]:
        """One kept or fresh update: associate it (atomic), then put what it confirmed or improved on the map."""
        fields = json.loads(update)
        frame = fields["frame"]
        associated = await self._tracks.associate(session_id, json.dumps(frame), str(fields["update_id"]))
        await self._merge(session_id, associated, str(fields.get("tenant", LOCAL_TENANT)))  # kept before tenants
        return associated.assignments

    async def _merge(self, session_id: str, associated: Associated, tenant: str) -> None:
        for track in associated.changed:  # confirmed and seen in this frame: its location or picture may be new
            if track.lat is None:
                continue
            try:
                await self._merge_one(session_id, HazardRecord.of_track(track), tenant)
            except HazardMapUnavailable as exc:  # the next better view of it merges again
                log.warning("hazard_map_merge_failed", session_id=session_id, hazard_id=track.hazard_id, **exc.details)

    async def report_to_map(self, source_id: str, records: Sequence[HazardRecord], tenant: str = LOCAL_TENANT) -> None:
        """Put hazards tracked elsewhere (a batch job's `Tracker`) on the fleet's map, as one source (a session id or
        e.g. `job-<id>`): the located ones, each merged like a session's."""
        for record in records:
            if record.located:
                await self._merge_one(source_id, record, tenant)

    async def _merge_one(self, source_id: str, record: HazardRecord, tenant: str) -> None:
        map_id = await self._map.merge(source_id, record, tenant)
        if map_id and self._observer is not None:
            self._observer.mapped(source_id, map_id, record, tenant)

    async def session_hazards(self, session_id: str, owner: str | None = None) -> list[HazardRecord]:
        """`owner`: the tenant that must own the session (None: any); another tenant's is SESSION_NOT_FOUND."""
        await self._sessions.get(session_id, owner)  # 404 for an unknown, expired or another tenant's session
        return await self._tracks.hazards(session_id)

    def recording_uploads(self, record: RecordUploadUrl) -> RecordUploadUrl:
        """`record` (the session's uploads ledger), then the map: a landed best frame becomes its entry's picture."""

        async def record_then_map(session_id: str, media_id: str, outcome: str) -> None:
            await record(session_id, media_id, outcome)
            url = upload_url(media_id, {media_id: outcome})
            if url is None:
                return
            try:
                hazards = [h for h in await self._tracks.hazards(session_id) if h.upload_media_id == media_id]
                tenant = await self._sessions.tenant_of(session_id) if hazards else None
                for hazard in hazards:
                    if hazard.located and tenant is not None:
                        await self._merge_one(session_id, hazard, tenant)
            except (SessionStoreUnavailable, HazardMapUnavailable) as exc:
                log.warning("hazard_map_picture_not_recorded", session_id=session_id, media_id=media_id, **exc.details)

        return record_then_map

    async def map_hazards(
        self,
        *,
        bbox: str | None,
        near: str | None,
        radius_m: float | None,
        limit: int,
        tenant: str | None = LOCAL_TENANT,
    ) -> list[MapHazard]:
        """Exactly one of `bbox` and `near` (with an optional `radius_m`); `tenant`'s map, None: every tenant's."""
        if (bbox is None) == (near is None):
            raise ValidationFailed("Give either bbox or near.", details={"fields": ["bbox", "near"]})
        if bbox is not None:
            if radius_m is not None:
                raise ValidationFailed("radius_m goes with near, not bbox.", details={"field": "radius_m"})
            return await self._map.within(parse_bbox(bbox), limit, tenant)
        assert near is not None
        return await self._map.near(parse_near(near, radius_m or DEFAULT_NEAR_RADIUS_M), limit, tenant)


def track_params(settings: TrackingSettings, uploads: UploadSettings) -> TrackParams:
    """The matcher's parameters, the same for sessions and batch jobs."""
    return TrackParams(
        min_hits=settings.min_hits,
        max_gap_seconds=settings.max_gap_seconds,
        iou_threshold=settings.iou_threshold,
        box_expand=settings.box_expand,
        upload_min_confidence=uploads.min_confidence,
        upload_margin=uploads.best_frame_margin,
    )


def create_tracking(
    settings: TrackingSettings,
    uploads: UploadSettings,
    fleet_name: str,
    client: RedisClient,
    breaker: AsyncBreaker,
    sessions: SessionStore,
    observe: RedisObserver | None = None,
    observer: TrackingObserver | None = None,
) -> TrackingService:
    """Tracking on the service's one Redis client and breaker. Kept updates are replayed through its `apply`
    (`sessions/write_behind.Replayer`, built after it)."""
    tracks = SessionTracks(client, breaker, track_params(settings, uploads), observe)
    hazard_map = HazardMap(
        client,
        breaker,
        fleet_name,
        merge_meters=settings.merge_meters,
        ttl_days=settings.map_ttl_days,
        observe=observe,
    )
    return TrackingService(sessions, tracks, hazard_map, observer)
