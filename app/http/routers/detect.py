"""POST /detect/{session_id}: read the frame, hand it to the detection service, shape the answer."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from app.http.auth import DetectCaller, owned_by
from app.http.openapi import REQUEST_ERRORS, error_responses
from app.http.schemas.detect import Box, DetectionOut, DetectResponse, ImageSize, ModelRef, SessionCheck
from app.http.schemas.frames import CONF, IOU, MAX_DET, MULTIPART_PROPERTIES, captured_at_query, meta_query
from app.http.schemas.frames import FIELDS as FRAME_META_FIELDS
from app.services.core.errors import (
    CLIENT_DISCONNECTED,
    ClientClosedRequest,
    DeadlineExceeded,
    ImageTooLarge,
    InvalidImage,
    KeyFrameRateLimited,
    ModelNotFound,
    ModelNotLoaded,
    ModelNotReady,
    Overloaded,
    RateLimited,
    RequestTimeout,
    SessionEnded,
    SessionNotFound,
    SessionStoreUnavailable,
    ShuttingDown,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.services.core.request_context import current_request_id
from app.services.detection.service import DetectionService, FrameResult
from app.services.identity.frame_rates import KeyFrameRates
from app.services.inference.types import Detection, DetectOptions
from app.services.tracking import types as tracking
from app.services.tracking.meta import frame_meta
from app.services.tracking.types import Assignment
from app.settings import Settings

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
_BINARY = {"type": "string", "format": "binary"}
# The body is read by hand (no form parsing or validation layer on the hot path), so the spec says what is read:
# the image, and where and when it was taken as fields beside it (or as query parameters, not both).
FRAME_REQUEST_BODY = {
    "required": True,
    "description": "The frame: a multipart field `file`, or the raw image with its own content type.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {**_BINARY, "description": "A JPEG, PNG or WebP image."},
                    **MULTIPART_PROPERTIES,
                },
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
    RequestTimeout,
    InvalidImage,
    SessionNotFound,
    SessionEnded,
    ModelNotFound,
    ModelNotLoaded,
    ImageTooLarge,
    UnsupportedMediaType,
    RateLimited,
    KeyFrameRateLimited,
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


async def _read_frame(request: Request, media_type: str, max_bytes: int, fields: dict[str, str]) -> bytes:
    """The image; a multipart body's metadata fields are copied into `fields`."""
    try:
        return await _read_body(request, media_type, max_bytes, fields)
    except ClientDisconnect:  # gone mid-body: nobody to answer, and not a server error
        raise ClientClosedRequest(details={"reason": CLIENT_DISCONNECTED}) from None


async def _read_body(request: Request, media_type: str, max_bytes: int, fields: dict[str, str]) -> bytes:
    if media_type != "multipart/form-data":
        return await request.body()  # the body-size middleware stops it at the limit
    form = await request.form(max_files=1, max_fields=8)
    unexpected = sorted({key for key in form if key != "file" and key not in FRAME_META_FIELDS})
    if unexpected:  # the spec says what is read and nothing else: a request that says more is not what was documented
        raise ValidationFailed(
            "Send only the multipart field 'file' and the frame's metadata fields.",
            details={"unexpected_fields": unexpected},
        )
    for key in FRAME_META_FIELDS:
        values = form.getlist(key)
        if len(values) > 1 or any(not isinstance(value, str) for value in values):
            raise ValidationFailed(f"Send '{key}' once, as a plain field.", details={"field": key})
        if values:
            fields[key] = str(values[0])
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationFailed("Send the image in a multipart field named 'file'.", details={"field": "file"})
    if upload.content_type and upload.content_type.lower() not in IMAGE_TYPES | {"application/octet-stream"}:
        raise UnsupportedMediaType(details={"content_type": upload.content_type, "accepted": sorted(IMAGE_TYPES)})
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(details={"max_bytes": max_bytes})
    return data


def server_timing(timings_ms: dict[str, float]) -> str:
    """The stage timings as a `Server-Timing` header (W3C): browsers' dev tools and clients see where the time went."""
    return ", ".join(f"{stage};dur={milliseconds}" for stage, milliseconds in timings_ms.items())


ReadFrame = Callable[[], Awaitable[bytes]]
ReadMeta = Callable[[], tracking.FrameMeta]  # the service's own, built from FrameMeta's fields


def frame_source(
    request: Request, max_bytes: int, query: Mapping[str, float | str | None]
) -> tuple[ReadFrame, ReadMeta]:
    """How the service reads the frame and then its metadata (query parameters, or multipart fields beside it)."""
    media_type = _media_type(request)
    if media_type != "multipart/form-data":
        frame_meta(query, {})  # nothing else can come: a wrong value is refused before the session is touched
    fields: dict[str, str] = {}
    return lambda: _read_frame(request, media_type, max_bytes, fields), lambda: frame_meta(query, fields)


def detection_out(detection: Detection, hazard: Assignment | None) -> DetectionOut:
    return DetectionOut(
        label=detection.label,
        class_id=detection.class_id,
        confidence=detection.confidence,
        box=Box(x1=detection.x1, y1=detection.y1, x2=detection.x2, y2=detection.y2),
        hazard_id=hazard.hazard_id if hazard else None,
        new_hazard=hazard.new_hazard if hazard else False,
    )


def detect_response(frame: FrameResult) -> DetectResponse:
    result, info, admission = frame.result, frame.model, frame.admission
    hazards: list[Assignment | None] = [*frame.hazards] if frame.hazards else [None] * len(result.detections)
    return DetectResponse(
        request_id=frame.request_id,
        session_id=frame.session_id,
        detections=[detection_out(d, hazard) for d, hazard in zip(result.detections, hazards, strict=True)],
        image=ImageSize(width=result.width, height=result.height),
        model=ModelRef(name=info.name, version=info.version),
        session=SessionCheck(
            verified=admission.verified, degraded=admission.degraded, frame_count=admission.frame_count
        ),
        timings_ms=result.timings_ms,
    )


def create_detect_router(
    detection: DetectionService, settings: Settings, frame_rates: KeyFrameRates | None = None
) -> APIRouter:
    """`frame_rates`: where keys' `frames_per_second` are counted (per process, `frame_rates.py`)."""
    router = APIRouter(tags=["detect"])
    key_rates = frame_rates or KeyFrameRates()

    @router.post("/detect/{session_id}", responses=DETECT_ERRORS, openapi_extra={"requestBody": FRAME_REQUEST_BODY})
    async def detect_frame(
        request: Request,
        response: Response,
        session_id: str,
        caller: DetectCaller,
        conf: Annotated[float, Query(ge=CONF[0], le=CONF[1])] = settings.detection.default_confidence,
        iou: Annotated[float, Query(ge=IOU[0], le=IOU[1])] = settings.detection.default_iou,
        max_det: Annotated[int, Query(ge=MAX_DET[0], le=MAX_DET[1])] = settings.detection.default_max_detections,
        model: Annotated[
            str | None, Query(max_length=128, description="A loaded model version; the active one by default.")
        ] = None,
        lat: Annotated[float | None, meta_query("lat")] = None,
        lon: Annotated[float | None, meta_query("lon")] = None,
        heading: Annotated[float | None, meta_query("heading")] = None,
        speed_mps: Annotated[float | None, meta_query("speed_mps")] = None,
        captured_at: Annotated[str | None, captured_at_query()] = None,
    ) -> DetectResponse:
        """Detect hazards on one frame of the session; boxes are in the pixels of the uploaded image. Each detection
        names its hazard (`hazard_id`), and the frame that confirms a hazard says so once (`new_hazard`)."""
        deadline = time.monotonic() + settings.detection.timeout_seconds
        if caller.key_id is not None and caller.limits.frames_per_second is not None:
            key_rates.take(caller.key_id, caller.limits.frames_per_second)
        query = {"lat": lat, "lon": lon, "heading": heading, "speed_mps": speed_mps, "captured_at": captured_at}
        read_frame, read_meta = frame_source(request, settings.images.max_bytes, query)
        options = DetectOptions(conf, iou, max_det)
        request_id = current_request_id() or ""
        frame = await detection.serve_frame(
            session_id,
            request_id,
            read_frame,
            options,
            deadline,
            model,
            frame_meta=read_meta,
            owner=owned_by(caller),
            device_profile=caller.device_profile,
        )
        response.headers["server-timing"] = server_timing(frame.result.timings_ms)
        return detect_response(frame)

    return router
