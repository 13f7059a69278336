"""The one vocabulary of upload states: what a history entry says and how the uploads counter is labelled."""

from __future__ import annotations

from enum import StrEnum


class UploadStatus(StrEnum):
    NONE = "none"  # no hazard confident enough to upload
    SKIPPED = "skipped"  # throttled: the session had an upload moments ago
    PENDING = "pending"  # queued for the background uploader; settles (or reads `lost`) by its settle-by time
    UPLOADED = "uploaded"  # landed in the store (first try or a retry)
    SPOOLED = "spooled"  # could not land now; kept on disk for retry
    SHED = "shed"  # the queue was full (or the service stopping); never annotated
    DROPPED = "dropped"  # the spool was full, its disk refused the write, or its copy was unreadable
    FAILED = "failed"  # could not be annotated
    LOST = "lost"  # queued, then nothing recorded by its settle-by time: the process died with it in memory


# What the background uploader counts (`hazard_uploads_total{outcome=...}`).
UPLOAD_OUTCOMES = (
    UploadStatus.UPLOADED,
    UploadStatus.SPOOLED,
    UploadStatus.SHED,
    UploadStatus.DROPPED,
    UploadStatus.FAILED,
)
