"""Bodies over their route's limit are refused (413) before they are read whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import error_response
from app.services.core.errors import (
    ApiError,
    ImageTooLarge,
    PayloadTooLarge,
)


class BodySizeLimitMiddleware:
    """Refuses bodies over the limit from Content-Length at once, and while streaming when it is absent or lies.

    Paths under `image_prefix` carry frames (413 IMAGE_TOO_LARGE): a raw image body may be `image_limit` bytes,
    a multipart body `multipart_overhead` more for its envelope (the router caps the file part itself at
    `image_limit`). Paths under `batch_prefix` carry many frames at once and get `batch_limit` (413
    PAYLOAD_TOO_LARGE). Every other route takes small JSON bodies and gets `default_limit` (413 PAYLOAD_TOO_LARGE).
    """

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        image_prefix: str,
        image_limit: int,
        multipart_overhead: int,
        batch_prefix: str,
        batch_limit: int,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.image_prefix = image_prefix
        self.image_limit = image_limit
        self.multipart_overhead = multipart_overhead
        self.batch_prefix = batch_prefix
        self.batch_limit = batch_limit

    def _limit(self, path: str, headers: dict[bytes, bytes]) -> int:
        if path.startswith(self.batch_prefix):
            return self.batch_limit
        if not path.startswith(self.image_prefix):
            return self.default_limit
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        return self.image_limit + (self.multipart_overhead if media_type == b"multipart/form-data" else 0)

    def _too_large(self, path: str) -> ApiError:
        if path.startswith(self.image_prefix):
            # The image limit, not the body limit: that is the figure a client can act on.
            return ImageTooLarge("The request body exceeds the size limit.", details={"max_bytes": self.image_limit})
        return PayloadTooLarge(details={"max_bytes": self._limit(path, {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        limit = self._limit(path, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = self._too_large(path)
            await error_response(error.status, error.code, error.message, error.details)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise self._too_large(path)
            return message

        await self.app(scope, counting_receive, send)
