"""Tracking for the detection path and the hazard routes: a frame's detections become hazards of its session,
confirmed hazards with a location go on the fleet's map, and both are read back as records or GeoJSON.

Positions: each track keeps its latest views; a hazard's position is where they project onto the road with the
session's calibration (`positions.py`): the key's device profile, else the session's `camera`, else one estimated
from the session's tracks once a few are confirmed (re-estimated, and the session's hazards re-merged, as more come,
up to ESTIMATE_SETTLED_TRACKS), else the camera's GPS.

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
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.principal import LOCAL_TENANT
from app.services.inference.types import Detection
from app.services.sessions.store import SessionStore
from app.services.tracking.hazard_map import HazardMap, MapHazard, parse_bbox, parse_near
from app.services.tracking.map_merge import MapReport, shown_once
from app.services.tracking.positions import (
    ESTIMATED,
    PROFILE,
    SESSION,
    Calibration,
    Camera,
    PositionParams,
    estimate_camera,
    locate,
)
from app.services.tracking.store import Associated, SessionTracks, camera_of, upload_url
from app.services.tracking.types import (
    Assignment,
    FrameInput,
    FrameMeta,
    HazardRecord,
    Track,
    TrackParams,
    frame_time,
    observation_of,
)
from app.settings import TrackingSettings, UploadSettings

log = structlog.get_logger(__name__)
HAZARD_ID_BYTES = 8
DEFAULT_NEAR_RADIUS_M = 100.0
ESTIMATE_SETTLED_TRACKS = 8  # a session's estimate from this many tracks is not redone
# The observer is told a session's camera only when its distances are this good (a profile's or the metadata's, or
# an estimate from ESTIMATE_SETTLED_TRACKS tracks: 0.18): the registry's passes place detections on the road with it,
# and an estimate from 3 tracks (~30 % off) would place a hazard 14 m ahead 4 m away from where it is.
PLACING_MAX_ERROR = 0.18


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
    image_size: tuple[int, int] | None = None,
) -> FrameInput:
    """A frame as the matcher sees it: its time is the capture time when the client gives one, else `received_at`;
    every detection carries a fresh hazard id, used if it starts a track. `image_size` (width, height) lets its
    boxes be projected onto the road; numbers are rounded as `types` says (GPS to 1e-9 degrees, ~0.1 mm)."""
    at = frame_time(meta.captured_at if meta.captured_at is not None else received_at)
    observations = tuple(observation_of(d, new_hazard_id()) for d in detections)
    lat, lon = (
        (round(meta.lat, 9), round(meta.lon, 9)) if meta.lat is not None and meta.lon is not None else (None, None)
    )
    heading = None if meta.heading is None else round(meta.heading, 3)
    speed = None if meta.speed_mps is None else round(meta.speed_mps, 3)
    width, height = image_size if image_size is not None else (None, None)
    return FrameInput(request_id, at, observations, lat, lon, model, media_id, heading, speed, width, height)


def profile_calibration(profile: DeviceProfile | None) -> Calibration | None:
    if profile is None:
        return None
    return Calibration(Camera(profile.height_m, profile.pitch_deg, profile.hfov_deg), PROFILE)


def places_detections(calibration: Calibration) -> bool:
    """Whether the calibration's distances are good enough to place detections on the road (PLACING_MAX_ERROR)."""
    return calibration.relative_error <= PLACING_MAX_ERROR


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

    def framed(self, session_id: str, frame: FrameInput, tenant: str, camera: Camera | None = None) -> None:
        """A frame of the tenant's session, with or without detections (a camera that saw nothing is news too);
        `camera`: the session's, when its key's device profile gives one."""

    def mapped(
        self, source_id: str, map_id: str, record: HazardRecord, tenant: str, emptied: tuple[str, ...] = ()
    ) -> None:
        """`record` of `source_id` was merged into the entry `map_id` of `tenant`'s map; the entries `emptied` are
        gone into it (`Merged.emptied`)."""

    def calibrated(self, session_id: str, camera: Camera) -> None:
        """The camera the session's positions are projected with (its profile's, its metadata's or estimated)."""


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

    async def track(
        self,
        session_id: str,
        frame: FrameInput,
        tenant: str = LOCAL_TENANT,
        device_profile: DeviceProfile | None = None,
    ) -> Tracked:
        """Associate the frame now; if Redis is down, keep the update for replay instead. `tenant`: the session's,
        whose map its hazards go on; `device_profile`: the client key's camera, which projects the session's
        positions before anything else."""
        if self._observer is not None:
            calibration = profile_calibration(device_profile)
            self._observer.framed(session_id, frame, tenant, None if calibration is None else calibration.camera)
        if not frame.observations:
            return Tracked([])  # nothing to associate; stale tracks are closed by the next frame's time
        fields: dict[str, object] = {"update_id": secrets.token_hex(8), "frame": frame.as_json(), "tenant": tenant}
        if device_profile is not None:
            fields["profile"] = device_profile.to_json()
        update = json.dumps(fields)
        try:
            return Tracked(await self.apply(session_id, update))
        except SessionStoreUnavailable:
            return Tracked(None, update)

    async def apply(self, session_id: str, update: str) -> list[Assignment]:
        """One kept or fresh update: associate it (atomic), then put what it confirmed or improved on the map."""
        fields = json.loads(update)
        frame = fields["frame"]
        associated = await self._tracks.associate(session_id, json.dumps(frame), str(fields["update_id"]))
        profile = camera_of(fields.get("profile"))
        tenant = str(fields.get("tenant", LOCAL_TENANT))  # updates kept before tenants: the default
        calibration = await self._calibration(
            session_id, associated, Calibration(profile, PROFILE) if profile is not None else None, tenant
        )
        if calibration is not None and places_detections(calibration) and self._observer is not None:
            self._observer.calibrated(session_id, calibration.camera)
        await self._merge(session_id, associated.changed, calibration, tenant)
        return associated.assignments

    async def _calibration(
        self, session_id: str, associated: Associated, profile: Calibration | None, tenant: str
    ) -> Calibration | None:
        """The calibration to project with: the profile's, the session's, or the stored estimate, refreshed when
        this frame confirmed a hazard and the estimate is not settled (then the session's hazards move with it)."""
        if not associated.applied:
            return associated.calibration
        given = profile or (Calibration(associated.session_camera, SESSION) if associated.session_camera else None)
        if given is not None:
            if given != associated.calibration:
                await self._tracks.set_calibration(session_id, given)
                await self._remerge(session_id, tenant)
            return given
        if not any(a.new_hazard for a in associated.assignments):
            return associated.calibration
        stored = await self._tracks.stored(session_id)
        settled = min(ESTIMATE_SETTLED_TRACKS, len(stored.tracks))
        if stored.calibration is not None and stored.calibration.tracks >= settled:
            return stored.calibration
        camera = estimate_camera([track.sightings for track, _ in stored.tracks], self._tracks.positions)
        if camera is None:
            return stored.calibration
        estimated = Calibration(camera, ESTIMATED, len(stored.tracks))
        await self._tracks.set_calibration(session_id, estimated)
        await self._remerge(session_id, tenant)
        return estimated

    async def _remerge(self, session_id: str, tenant: str) -> None:
        """Every located hazard of the session again, at its position with the session's new calibration."""
        for record in await self._tracks.hazards(session_id):
            await self._merge_record(session_id, record, tenant)

    async def _merge(
        self, session_id: str, changed: Sequence[Track], calibration: Calibration | None, tenant: str
    ) -> None:
        for track in changed:  # confirmed and seen in this frame: its location or picture may be new
            position = locate(track, calibration, self._tracks.positions)
            if position is not None:
                await self._merge_record(session_id, HazardRecord.of_track(track, position=position), tenant)

    async def _merge_record(self, session_id: str, record: HazardRecord, tenant: str) -> None:
        if not record.located:
            return
        try:
            if await self._merge_one(session_id, record, tenant):
                await self._remerge(session_id, tenant)  # once per session: its GPS offset is known from now on
        except HazardMapUnavailable as exc:  # the next better view of it merges again
            log.warning("hazard_map_merge_failed", session_id=session_id, hazard_id=record.hazard_id, **exc.details)

    async def _merge_one(self, source_id: str, record: HazardRecord, tenant: str) -> bool:
        """Whether this merge established the source's GPS offset (`Merged.realigned`)."""
        merged = await self._map.merge(source_id, record, tenant)
        if merged.entry_id and self._observer is not None:
            self._observer.mapped(source_id, merged.entry_id, record, tenant, merged.emptied)
        return merged.realigned

    async def session_hazards(self, session_id: str, owner: str | None = None) -> list[HazardRecord]:
        """`owner`: the tenant that must own the session (None: any); another tenant's is SESSION_NOT_FOUND."""
        await self._sessions.get(session_id, owner)  # 404 for an unknown, expired or another tenant's session
        return one_per_object(session_id, await self._tracks.hazards(session_id))

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
        expand_interval_seconds=settings.expand_interval_seconds,
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
    positions = PositionParams(gps_sigma_m=settings.gps_sigma_m, assumed_hfov_deg=settings.assumed_hfov_deg)
    tracks = SessionTracks(client, breaker, track_params(settings, uploads), observe, positions)
    hazard_map = HazardMap(
        client,
        breaker,
        fleet_name,
        merge_meters=settings.merge_meters,
        merge_sigmas=settings.merge_sigmas,
        ttl_days=settings.map_ttl_days,
        observe=observe,
    )
    return TrackingService(sessions, tracks, hazard_map, observer)


def one_per_object(session_id: str, records: list[HazardRecord]) -> list[HazardRecord]:
    """The session's hazards, one per object: a hazard the detector also saw as another class at the same time and
    place (debris also called a crack for a few frames) is listed once, as the map shows it (`map_merge.shown_once`)."""
    reports = {
        f"{session_id}/{r.hazard_id}": MapReport(
            f"{session_id}/{r.hazard_id}",
            r.label,
            r.lat,
            r.lon,
            r.position_uncertainty_m or 0.0,
            r.position_method or "camera_gps",
            r.first_seen,
            r.last_seen,
            r.frames,
        )
        for r in records
        if r.lat is not None and r.lon is not None
    }
    hidden = reports.keys() - {report.source for report in shown_once(list(reports.values()))}
    return [r for r in records if f"{session_id}/{r.hazard_id}" not in hidden]
