"""Errors as values: a stable code, an HTTP-style status and details, raised anywhere below the routers.

`app/errors.py` turns them into the one JSON error shape; nothing here knows about HTTP frameworks.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    message = "Internal server error."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = details or {}
        self.retry_after = retry_after
        super().__init__(self.message)


def _error(code: str, status: int, message: str) -> type[ApiError]:
    return type(code.title().replace("_", ""), (ApiError,), {"code": code, "status": status, "message": message})


InvalidImage = _error("INVALID_IMAGE", 400, "The body is not a decodable JPEG, PNG or WebP image.")
ImageTooLarge = _error("IMAGE_TOO_LARGE", 413, "The image exceeds the size limit.")
PayloadTooLarge = _error("PAYLOAD_TOO_LARGE", 413, "The request body exceeds the size limit.")
UnsupportedMediaType = _error(
    "UNSUPPORTED_MEDIA_TYPE", 415, "Send multipart/form-data or image/jpeg, image/png, image/webp."
)
SessionNotFound = _error("SESSION_NOT_FOUND", 404, "No such session, or it has expired.")
SessionEnded = _error("SESSION_ENDED", 409, "The session has ended.")
RateLimited = _error("RATE_LIMITED", 429, "Too many frames for this session; slow down.")
Overloaded = _error("OVERLOADED", 503, "The detector is at capacity; retry shortly.")
ModelNotReady = _error("MODEL_NOT_READY", 503, "The model is not loaded yet or failed to load.")
SessionStoreUnavailable = _error("SESSION_STORE_UNAVAILABLE", 503, "The session store is unavailable.")
DeadlineExceeded = _error("DEADLINE_EXCEEDED", 504, "The request could not be served before its deadline.")
ShuttingDown = _error("SHUTTING_DOWN", 503, "The service is shutting down.")
ValidationFailed = _error("VALIDATION_ERROR", 422, "The request is not valid.")
MediaNotFound = _error("MEDIA_NOT_FOUND", 404, "No such media file.")
