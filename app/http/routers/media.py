"""Annotated frames stored in the local directory (no Cloudinary configured), served read-only; with AUTH_MODE=keys
only at the signed URLs the service hands out (`app/services/uploads/signing.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.http.openapi import REQUEST_ERRORS, error_responses
from app.services.core.errors import MediaNotFound
from app.services.uploads.signing import MediaSigner
from app.services.uploads.stores import MEDIA_PREFIX, media_file

# A stored frame never changes under its name (a random media id). `X-Content-Type-Options: nosniff` is sent on
# every answer of the service (RequestContextMiddleware), errors and 405s of this route included.
MEDIA_HEADERS = {"Cache-Control": "private, max-age=86400"}
MEDIA_RESPONSES = {
    200: {
        "description": "The annotated frame.",
        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    },
    **error_responses(*REQUEST_ERRORS, MediaNotFound),
}


def create_media_router(storage_dir: Path, signer: MediaSigner | None = None) -> APIRouter:
    """`signer`: None serves any stored frame (AUTH_MODE=off's behaviour)."""
    router = APIRouter(prefix=MEDIA_PREFIX, tags=["media"])

    async def get_media(
        path: str,
        expires: Annotated[str | None, Query(max_length=20, description="With AUTH_MODE=keys: as handed out.")] = None,
        sig: Annotated[str | None, Query(max_length=128, description="With AUTH_MODE=keys: as handed out.")] = None,
    ) -> FileResponse:
        """An annotated frame, at the URL its history entry gives (`upload.url`: `/media/<media id>.jpg`, signed
        with AUTH_MODE=keys). Any other path, deeper ones included, and a missing, expired or altered signature,
        are 404 `MEDIA_NOT_FOUND`: what an unknown frame answers."""
        if signer is not None and not signer.allows(path, expires, sig):
            raise MediaNotFound(details={"path": path[:200]})
        return FileResponse(media_file(storage_dir, path), media_type="image/jpeg", headers=MEDIA_HEADERS)

    router.add_api_route(
        "/{path:path}", get_media, methods=["GET"], response_class=FileResponse, responses=MEDIA_RESPONSES
    )
    # HEAD answers the same; kept out of the schema so the operation id stays unique.
    router.add_api_route(
        "/{path:path}", get_media, methods=["HEAD"], response_class=FileResponse, include_in_schema=False
    )

    return router
