"""Annotated frames stored in the local directory (no Cloudinary configured), served read-only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.services.uploads.stores import MEDIA_PREFIX, media_file

# A stored frame never changes under its name (session id + request id).
MEDIA_HEADERS = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}


def create_media_router(storage_dir: Path) -> APIRouter:
    router = APIRouter(prefix=MEDIA_PREFIX, tags=["media"])

    async def media(path: str) -> FileResponse:
        return FileResponse(media_file(storage_dir, path), media_type="image/jpeg", headers=MEDIA_HEADERS)

    router.add_api_route("/{path:path}", media, methods=["GET"], response_class=FileResponse)
    # HEAD answers the same; kept out of the schema so the operation id stays unique.
    router.add_api_route("/{path:path}", media, methods=["HEAD"], response_class=FileResponse, include_in_schema=False)

    return router
