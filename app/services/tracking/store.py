"""Tracks and hazard records of live sessions, in Redis beside the session's other keys (its hash tag, its TTL).

`session:{<id>}:tracks` (hash: `open`, the open tracks; `applied`, the ids of recent updates; `calibration`, the
camera the session's positions are projected with, once known) and `session:{<id>}:hazards` (hash: hazard id ->
confirmed record). One frame's association is one ASSOCIATE call:
atomic per session, so frames of one session arriving at once, at any replica, never race.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import register_script
from app.services.core.types import RedisClient, RedisObserver
from app.services.sessions.guarded import guarded
from app.services.sessions.keys import session_key
from app.services.tracking import scripts
from app.services.tracking.positions import Calibration, Camera, PositionParams, locate
from app.services.tracking.types import Assignment, HazardRecord, Track, TrackParams
from app.services.uploads.ledger import resolve_upload

T = TypeVar("T")


def tracking_keys(session_id: str) -> list[str]:
    """The session's hash (ASSOCIATE reads its TTL), its tracks and its hazards: one hash tag, one slot."""
    base = session_key(session_id)
    return [base, f"{base}:tracks", f"{base}:hazards"]


@dataclass(frozen=True)
class Associated:
    """What ASSOCIATE answered: each detection's assignment and the confirmed tracks the frame touched.
    `applied` is False when the session is gone or the update had been applied already (a replay)."""

    applied: bool
    assignments: list[Assignment]
    changed: list[Track]
    session_camera: Camera | None = None  # the session metadata's `camera`
    calibration: Calibration | None = None  # what the session's positions were last projected with


def params_json(params: TrackParams) -> str:
    return json.dumps(
        {
            "min_hits": params.min_hits,
            "max_gap_seconds": params.max_gap_seconds,
            "iou_threshold": params.iou_threshold,
            "box_expand": params.box_expand,
            "expand_interval_seconds": params.expand_interval_seconds,
            "upload_min_confidence": params.upload_min_confidence,
            "upload_margin": params.upload_margin,
            "sightings_kept": params.sightings_kept,
        }
    )


def camera_of(data: object) -> Camera | None:
    """A camera from JSON (`height_m`, `pitch_deg`, `hfov_deg`): checked where it entered, so anything else is
    a record from before positions, read as none."""
    if not isinstance(data, dict):
        return None
    try:
        return Camera(float(data["height_m"]), float(data["pitch_deg"]), float(data["hfov_deg"]))
    except (KeyError, TypeError, ValueError):
        return None


def calibration_of(raw: object) -> Calibration | None:
    if not isinstance(raw, str):
        return None
    data = json.loads(raw)
    camera = camera_of(data)
    if camera is None:
        return None
    return Calibration(camera, str(data.get("method", "estimated")), int(data.get("tracks", 0)))


def calibration_json(calibration: Calibration) -> str:
    camera = calibration.camera
    return json.dumps(
        {
            "height_m": camera.height_m,
            "pitch_deg": camera.pitch_deg,
            "hfov_deg": camera.hfov_deg,
            "method": calibration.method,
            "tracks": calibration.tracks,
        }
    )


@dataclass(frozen=True)
class StoredHazards:
    """A session's confirmed tracks (each with its best frame's URL, once landed) and its stored calibration."""

    tracks: list[tuple[Track, str | None]]
    calibration: Calibration | None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson writes an empty array as {}


class SessionTracks:
    def __init__(
        self,
        client: RedisClient,
        breaker: AsyncBreaker,
        params: TrackParams,
        observe: RedisObserver | None = None,
        positions: PositionParams | None = None,
    ) -> None:
        self._redis = client
        self.breaker = breaker
        self.params = params
        self.positions = positions or PositionParams()
        self._params_json = params_json(params)
        self._observe = observe
        self._associate = register_script(client, scripts.ASSOCIATE)

    async def _guarded(self, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await guarded(self.breaker, name, operation, self._observe)

    async def associate(self, session_id: str, frame_json: str, update_id: str) -> Associated:
        """One frame's detections into the session's tracks, atomically; `frame_json` is `FrameInput.as_json()`."""
        keys = tracking_keys(session_id)
        raw = await self._guarded(
            "associate", lambda: self._associate(keys=keys, args=[frame_json, self._params_json, update_id])
        )
        reply = json.loads(raw)
        if reply.get("status") != "ok":
            return Associated(False, [], [])
        assignments = [
            Assignment(str(hazard_id), bool(new), bool(upload))
            for hazard_id, new, upload in _list(reply.get("assignments"))
        ]
        changed = [Track.of_json(t) for t in _list(reply.get("changed"))]
        return Associated(
            True, assignments, changed, camera_of(reply.get("camera")), calibration_of(reply.get("calibration"))
        )

    async def set_calibration(self, session_id: str, calibration: Calibration) -> None:
        """Record the camera the session's positions are projected with (its tracks hash: the session's TTL)."""
        _, tracks_key, _ = tracking_keys(session_id)
        value = calibration_json(calibration)

        async def write() -> None:
            await self._redis.hset(tracks_key, "calibration", value)  # type: ignore[misc]

        await self._guarded("calibration", write)

    async def stored(self, session_id: str) -> StoredHazards:
        """The session's confirmed tracks and calibration, in one round trip."""
        _, tracks_key, hazards_key = tracking_keys(session_id)
        uploads_key = f"{session_key(session_id)}:uploads"

        async def read() -> tuple[dict[str, str], dict[str, str], str | None]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(hazards_key)
                pipe.hgetall(uploads_key)
                pipe.hget(tracks_key, "calibration")
                hazards, uploads, calibration = await pipe.execute()
            return cast(dict[str, str], hazards), cast(dict[str, str], uploads), cast(str | None, calibration)

        hazards, uploads, raw_calibration = await self._guarded("hazards", read)
        tracks = []
        for raw in hazards.values():
            track = Track.of_json(json.loads(raw))
            tracks.append((track, upload_url(track.upload_media_id, uploads)))
        return StoredHazards(tracks, calibration_of(raw_calibration))

    async def hazards(self, session_id: str) -> list[HazardRecord]:
        """The session's confirmed hazards, oldest first, each where its views project with the session's
        calibration (else the camera's GPS) and with the URL of its best annotated frame once that upload landed."""
        stored = await self.stored(session_id)
        records = [
            HazardRecord.of_track(track, url, locate(track, stored.calibration, self.positions))
            for track, url in stored.tracks
        ]
        return sorted(records, key=lambda r: (r.first_seen, r.hazard_id))


def upload_url(media_id: str | None, uploads: dict[str, str]) -> str | None:
    """The URL recorded for an upload, once it has landed."""
    if media_id is None:
        return None
    state = resolve_upload({"id": media_id}, None, uploads, time.time())
    url = state.get("url")
    return url if isinstance(url, str) else None
