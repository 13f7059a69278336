"""Where a session lives in Redis.

Keys per session, with literal braces around the id (a hash tag: Redis Cluster hashes only the id, so all of a
session's keys share one slot), all sharing the session's TTL: `session:{<id>}` (hash), `session:{<id>}:history`
(list, newest first), `session:{<id>}:uploads` (hash media id -> upload outcome), and tracking's
`session:{<id>}:tracks` and `session:{<id>}:hazards` (`services/tracking/store.py`). Nothing else is written: no
index, so an expired session leaves no key behind. Every multi-step change is one Lua script over one session's keys,
so concurrent frames of a session never race and every script runs on a cluster as on one Redis.
"""

from __future__ import annotations

from app.services.core.errors import SessionNotFound
from app.services.core.ids import SESSION_ID

# Matches session hashes only (`session:{<id>}`; ids are URL-safe base64, never a brace), not their lists.
SESSION_MATCH = "session:{*}"
SCAN_BATCH = 500  # keys per SCAN call and per pipelined read: each round trip stays short


def session_key(session_id: str) -> str:
    return f"session:{{{session_id}}}"


def session_id_of(key: str) -> str:
    """The id in a session hash's key (`session_key`'s inverse)."""
    return key.removeprefix("session:{").removesuffix("}")


def session_keys(session_id: str) -> list[str]:
    """The session's hash, history list, uploads hash, then its tracks and hazards (`services/tracking/store.py`):
    one hash tag, one slot (what the scripts' KEYS are; every key gets the session's TTL)."""
    base = session_key(session_id)
    return [base, f"{base}:history", f"{base}:uploads", f"{base}:tracks", f"{base}:hazards"]


def require_session_id(session_id: str) -> None:
    """A string that cannot be a session id names no session: refused before any Redis key is built from it."""
    if not SESSION_ID.fullmatch(session_id):
        raise SessionNotFound(details={"session_id": session_id})
