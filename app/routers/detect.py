"""POST /detect/{session_id}: read the frame, hand it to the detection service, shape the answer."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from app.openapi import REQUEST_ERRORS, error_responses
from app.request_context import current_request_id
from app.schemas import Box, DetectionOut, DetectResponse, ImageSize, ModelRef, SessionCheck
from app.services.detection import DetectionService
from app.services.errors import (
    CLIENT_DISCONNECTED,
    ClientClosedRequest,
    DeadlineExceeded,
    ImageTooLarge,
    InvalidImage,
    ModelNotFound,
    ModelNotLoaded,
    ModelNotReady,
    Overloaded,
    RateLimited,
    SessionEnded,
    SessionNotFound,
    SessionStoreUnavailable,
    ShuttingDown,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.services.inference.types import DetectOptions
from app.settings import Settings

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
_BINARY = {"type": "string", "format": "binary"}
# The body is read by hand (no form parsing or validation layer on the hot path), so the spec says what is read.
FRAME_REQUEST_BODY = {
    "required": True,
    "description": "The frame: a multipart field `file`, or the raw image with its own content type.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {**_BINARY, "description": "A JPEG, PNG or WebP image."}},
                "required": ["file"],
                "additionalProperties": False,
            },
            "encoding": {"file": {"contentType": ", ".join(sorted(IMAGE_TYPES | {"application/octet-stream"}))}},
        },
        **{media_type: {"schema": _BINARY} for media_type in sorted(IMAGE_TYPES)},
    },
}
DETECT_ERRORS = error_responses(
    *REQUEST_ERRORS,
    InvalidImage,
    SessionNotFound,
    SessionEnded,
    ModelNotFound,
    ModelNotLoaded,
    ImageTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Overloaded,
    ModelNotReady,
    SessionStoreUnavailable,
    ShuttingDown,
    DeadlineExceeded,
)


def _media_type(request: Request) -> str:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data" and media_type not in IMAGE_TYPES:
        raise UnsupportedMediaType(details={"content_type": media_type or None, "accepted": sorted(IMAGE_TYPES)})
    return media_type


async def _read_frame(request: Request, media_type: str, max_bytes: int) -> bytes:
    try:
        return await _read_body(request, media_type, max_bytes)
    except ClientDisconnect:  # gone mid-body: nobody to answer, and not a server error
        raise ClientClosedRequest(details={"reason": CLIENT_DISCONNECTED}) from None


async def _read_body(request: Request, media_type: str, max_bytes: int) -> bytes:
    if media_type != "multipart/form-data":
        return await request.body()  # the body-size middleware stops it at the limit
    form = await request.form(max_files=1, max_fields=8)
    unexpected = sorted({key for key in form if key != "file"})
    if unexpected:  # the spec says `file` and nothing else: a request that says more is not what was documented
        raise ValidationFailed("Send only the multipart field 'file'.", details={"unexpected_fields": unexpected})
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationFailed("Send the image in a multipart field named 'file'.", details={"field": "file"})
    if upload.content_type and upload.content_type.lower() not in IMAGE_TYPES | {"application/octet-stream"}:
        raise UnsupportedMediaType(details={"content_type": upload.content_type, "accepted": sorted(IMAGE_TYPES)})
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(details={"max_bytes": max_bytes})
    return data


def create_detect_router(detection: DetectionService, settings: Settings) -> APIRouter:
    router = APIRouter(tags=["detect"])

    @router.post("/detect/{session_id}", responses=DETECT_ERRORS, openapi_extra={"requestBody": FRAME_REQUEST_BODY})
    async def detect_frame(
        request: Request,
        session_id: str,
        conf: Annotated[float, Query(ge=0.0, le=1.0)] = settings.default_confidence,
        iou: Annotated[float, Query(ge=0.0, le=1.0)] = settings.default_iou,
        max_det: Annotated[int, Query(ge=1, le=1000)] = settings.default_max_detections,
        model: Annotated[
            str | None, Query(max_length=128, description="A loaded model version; the active one by default.")
        ] = None,
    ) -> DetectResponse:
        """Detect hazards on one frame of the session; boxes are in the pixels of the uploaded image."""
        deadline = time.monotonic() + settings.request_timeout_seconds
        media_type = _media_type(request)
        request_id = current_request_id() or ""
        frame = await detection.serve_frame(
            session_id,
            request_id,
            lambda: _read_frame(request, media_type, settings.max_image_bytes),
            DetectOptions(conf, iou, max_det),
            deadline,
            model,
        )
        result, info = frame.result, frame.model
        return DetectResponse(
            request_id=request_id,
            session_id=session_id,
            detections=[
                DetectionOut(
                    label=d.label,
                    class_id=d.class_id,
                    confidence=d.confidence,
                    box=Box(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2),
                )
                for d in result.detections
            ],
            image=ImageSize(width=result.width, height=result.height),
            model=ModelRef(name=info.name, version=info.version),
            session=SessionCheck(
                verified=frame.admission.verified,
                degraded=frame.admission.degraded,
                frame_count=frame.admission.frame_count,
            ),
            timings_ms=result.timings_ms,
        )

    return router
