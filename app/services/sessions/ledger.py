"""The session's uploads ledger: each upload's outcome (`uploads/ledger.py`) under its media id, in the session's
`uploads` hash, for exactly as long as the session lives. History reads resolve their entries' uploads from it."""

from __future__ import annotations

from app.services.sessions import scripts
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.keys import session_keys


class UploadLedger:
    def __init__(self, redis: GuardedRedis) -> None:
        self._redis = redis
        self._set_upload_url = redis.script(scripts.SET_UPLOAD_URL)

    async def record(self, session_id: str, media_id: str, outcome: str) -> None:
        """Record an upload's outcome under its media id; nothing once the session is gone (no key outlives it)."""
        key, _, uploads_key = session_keys(session_id)[:3]
        await self._redis.call(
            "set_upload_url", lambda: self._set_upload_url(keys=[key, uploads_key], args=[media_id, outcome])
        )
