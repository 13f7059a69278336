"""Plain ASGI middleware, one class per module (no BaseHTTPMiddleware on the hot path)."""

from app.http.middleware.body_deadline import BodyDeadlineMiddleware
from app.http.middleware.body_size import BodySizeLimitMiddleware
from app.http.middleware.request_context import RequestContextMiddleware

__all__ = ["BodyDeadlineMiddleware", "BodySizeLimitMiddleware", "RequestContextMiddleware"]
