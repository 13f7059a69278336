"""What the upload tests share: settings under which uploads play out fast, a frame with hazards, and the uploads
a session's history records."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.images import scene_with_hazards

# Uploads fail fast and are retried fast: what a test waits for plays out within a few seconds. Every frame's
# hazards are new ones (tracks confirmed at once, closed at once), so every frame with hazards is uploaded.
FAST_UPLOADS: dict[str, Any] = {
    "track_min_hits": 1,
    "track_max_gap_seconds": 0.001,
    "upload_min_confidence": 0.3,
    "upload_retry_base_seconds": 0.05,
    "upload_retry_max_seconds": 0.2,
    "breaker_fail_max": 1,
    "breaker_reset_seconds": 0.3,
    "cloudinary_timeout_seconds": 0.5,
}


def hazard_frame(seed: int = 3) -> bytes:
    frame, jpeg = scene_with_hazards(seed=seed, size=(1280, 720))
    assert frame.hazards
    return jpeg


async def history_uploads(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/detections", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [{"request_id": item["request_id"], **item["upload"]} for item in response.json()["items"]]
