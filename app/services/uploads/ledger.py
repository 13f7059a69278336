"""What a history entry says about its frame's upload, from the moment it is queued until it settles.

Every upload gets a server-generated media id: the name of its stored frame (local file, Cloudinary public id)
and the field of the session's uploads hash where its outcome is recorded. The client's request id is never a
key: two frames sent with one `X-Request-ID` are two files, and each history entry points at its own.

A queued upload's entry says `pending` with its media id and a settle-by time. The uploader records every
outcome it reaches (`uploaded` with the URL, `spooled`, `dropped`, `failed`) under the media id; a read
that finds nothing recorded past the settle-by time answers `lost`: the process died (SIGKILL, OOM) with the
upload still in memory, so it will never land. Nothing stays `pending` forever.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from app.services.uploads.status import UploadStatus

MEDIA_ID_BYTES = 16
# What `new_media_id` hands out: anything else names no stored frame, and is refused before the disk is touched.
MEDIA_ID = re.compile(r"^[0-9a-f]{32}$")
MEDIA_NAME = re.compile(r"^([0-9a-f]{32})\.jpg$")


def new_media_id() -> str:
    """128 random bits: unguessable, so a media URL reveals nothing and cannot be enumerated."""
    return secrets.token_hex(MEDIA_ID_BYTES)


def history_upload(status: UploadStatus, media_id: str | None = None, settle_by: float | None = None) -> dict[str, Any]:
    """The `upload` object of a new history entry; a queued upload carries its media id and settle-by time."""
    if status is not UploadStatus.PENDING or media_id is None:
        return {"status": status.value}
    return {"status": status.value, "id": media_id, "settle_by": settle_by}


def outcome_value(status: UploadStatus, url: str | None = None) -> str:
    """What the uploader records in the session's uploads hash under the media id."""
    return json.dumps({"status": status.value, "url": url} if url is not None else {"status": status.value})


def resolve_upload(
    upload: Mapping[str, Any] | None, request_id: object, recorded: Mapping[str, str], now: float
) -> dict[str, Any]:
    """The upload state a history read shows: `{status, url?}` from what was recorded, or `lost` once overdue."""
    stated = dict(upload or {"status": UploadStatus.NONE.value})
    # Entries written before media ids were recorded under their request id, and the value was the bare URL.
    key = stated.get("id") or request_id
    value = recorded.get(key) if isinstance(key, str) else None
    if value is not None:
        return _recorded_state(value)
    status = stated.get("status")
    settle_by = stated.get("settle_by")
    if status == UploadStatus.PENDING.value and isinstance(settle_by, int | float) and now > settle_by:
        return {"status": UploadStatus.LOST.value}
    return {"status": status} if status is not None else {"status": UploadStatus.NONE.value}


def _recorded_state(value: str) -> dict[str, Any]:
    if not value.startswith("{"):
        return {"status": UploadStatus.UPLOADED.value, "url": value}
    try:
        outcome = json.loads(value)
        status = UploadStatus(outcome["status"]).value
    except (ValueError, KeyError, TypeError):
        return {"status": UploadStatus.FAILED.value}
    url = outcome.get("url")
    return {"status": status, "url": url} if isinstance(url, str) else {"status": status}
