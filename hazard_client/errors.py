"""What can go wrong, as exceptions: the server's error answers, and not reaching the server at all."""

from __future__ import annotations

from typing import Any


class HazardError(Exception):
    """Base of every error this package raises. `request_id` is the X-Request-ID the request was sent with: the
    server's log lines of that request carry it."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class ApiError(HazardError):
    """The server answered with its error shape: `{"error": {"code", "message", "details", "request_id"}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request_id)
        self.status = status
        self.code = code
        self.details = details or {}
        self.retry_after = retry_after

    @property
    def unavailable(self) -> bool:
        """The server (or something it needs) is down, overloaded or failing: not the request's fault."""
        return self.status >= 500 or self.code in ("BACKPRESSURE", "RATE_LIMITED")

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message} [request {self.request_id}]"


class ConnectionFailed(HazardError):
    """No answer: the server could not be reached, the connection was lost, or it did not answer in time."""

    def __init__(self, message: str, url: str, request_id: str | None = None) -> None:
        super().__init__(message, request_id)
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} ({self.url})"
