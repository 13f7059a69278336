"""Annotated uploads of frames with hazards: Cloudinary, or a local directory; spooled and retried.

(Interface in place; the worker, spool and Cloudinary client are being built for issue 4.)
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services.inference.engine import Detection


@dataclass(frozen=True)
class UploadJob:
    session_id: str
    request_id: str
    image: bytes
    detections: list[Detection]


class UploadService:
    async def check(self) -> dict[str, object]:
        return {"ok": True}

    def submit(self, job: UploadJob) -> bool:
        """Queue without waiting; False when the queue is full and the upload is shed."""
        return False
