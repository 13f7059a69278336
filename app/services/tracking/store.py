"""Tracks and hazard records of live sessions, in Redis beside the session's other keys (its hash tag, its TTL).

`session:{<id>}:tracks` (hash: `open`, the open tracks; `applied`, the ids of recent updates) and
`session:{<id>}:hazards` (hash: hazard id -> confirmed record). One frame's association is one ASSOCIATE call:
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


def params_json(params: TrackParams) -> str:
    return json.dumps(
        {
            "min_hits": params.min_hits,
            "max_gap_seconds": params.max_gap_seconds,
            "iou_threshold": params.iou_threshold,
            "box_expand": params.box_expand,
            "upload_min_confidence": params.upload_min_confidence,
            "upload_margin": params.upload_margin,
        }
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson writes an empty array as {}


class SessionTracks:
    def __init__(
        self, client: RedisClient, breaker: AsyncBreaker, params: TrackParams, observe: RedisObserver | None = None
    ) -> None:
        self._redis = client
        self.breaker = breaker
        self.params = params
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
        return Associated(True, assignments, [Track.of_json(t) for t in _list(reply.get("changed"))])

    async def hazards(self, session_id: str) -> list[HazardRecord]:
        """The session's confirmed hazards, oldest first, each with the URL of its best annotated frame once
        that upload has landed."""
        _, _, hazards_key = tracking_keys(session_id)
        uploads_key = f"{session_key(session_id)}:uploads"

        async def read() -> tuple[dict[str, str], dict[str, str]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(hazards_key)
                pipe.hgetall(uploads_key)
                hazards, uploads = await pipe.execute()
            return cast(dict[str, str], hazards), cast(dict[str, str], uploads)

        hazards, uploads = await self._guarded("hazards", read)
        records = []
        for raw in hazards.values():
            track = Track.of_json(json.loads(raw))
            records.append(HazardRecord.of_track(track, upload_url(track.upload_media_id, uploads)))
        return sorted(records, key=lambda r: (r.first_seen, r.hazard_id))


def upload_url(media_id: str | None, uploads: dict[str, str]) -> str | None:
    """The URL recorded for an upload, once it has landed."""
    if media_id is None:
        return None
    state = resolve_upload({"id": media_id}, None, uploads, time.time())
    url = state.get("url")
    return url if isinstance(url, str) else None
