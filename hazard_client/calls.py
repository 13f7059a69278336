"""Every API call once, as data: what to send and how to read the answer. The sync and async clients only send.

Requests are sent with an `X-Request-ID` of our own, the same on every retry of one call: the server takes it as
the request's id (its log lines and its error answer carry it), so an error raised here can be found there.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from hazard_client.errors import ApiError, ConnectionFailed
from hazard_client.models import (
    AuditList,
    DeepReport,
    DetectResponse,
    FleetOut,
    FrameMeta,
    FramesAccepted,
    HistoryPage,
    JobCreated,
    JobList,
    JobOut,
    JobResultsPage,
    KeyCreated,
    KeyList,
    KeyOut,
    LiveReport,
    ModelsOverview,
    OperatorList,
    OperatorOut,
    QueueDepth,
    ReadyReport,
    SessionHazards,
    SessionOut,
)
from hazard_client.retry import RetryPolicy

if TYPE_CHECKING:
    from PIL.Image import Image

    ImageInput = bytes | str | os.PathLike[str] | Image
else:
    ImageInput = Any

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
FilePart = tuple[str, tuple[str | None, bytes, str]]


@dataclass(frozen=True)
class Frame:
    """One frame of a batch job: its bytes, the name it is kept under, and where and when it was taken."""

    data: bytes
    filename: str | None = None
    meta: FrameMeta | None = None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    files: list[FilePart] | None = None
    retry: RetryPolicy | None = None  # None: the client's policy
    answers: frozenset[int] = field(default_factory=frozenset)  # error statuses whose body is the answer (probes)

    def send_args(self, request_id: str) -> dict[str, Any]:
        params = {key: value for key, value in (self.params or {}).items() if value is not None}
        args: dict[str, Any] = {"params": params, "headers": {"x-request-id": request_id}}
        if self.json is not None:
            args["json"] = self.json
        if self.files is not None:
            args["files"] = self.files
        return args

    def result(self, response: httpx.Response, request_id: str) -> T:
        if response.is_success or response.status_code in self.answers:
            return self.read(response)
        raise api_error(response, request_id)


def reader(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def api_error(response: httpx.Response, request_id: str) -> ApiError:
    retry_after = _seconds(response.headers.get("retry-after"))
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            dict(error.get("details") or {}),
            str(error.get("request_id") or request_id),
            retry_after,
        )
    except (ValueError, KeyError, TypeError):  # not the API's error shape: a proxy's page, say
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"HTTP_{response.status_code}", text, {}, request_id, retry_after)


def connection_failed(exc: httpx.TransportError, base_url: str, request_id: str) -> ConnectionFailed:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        what = "cannot connect to the server"
    elif isinstance(exc, httpx.TimeoutException):
        what = "the server did not answer in time"
    else:
        what = "the connection to the server was lost"
    reason = str(exc).strip()
    return ConnectionFailed(f"{what}: {type(exc).__name__}{': ' + reason if reason else ''}", base_url, request_id)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: this API sends seconds only


def media_type(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"  # the server decides (400 INVALID_IMAGE)


def image_bytes(image: ImageInput) -> tuple[bytes, str]:
    """The encoded image and a file name for it: bytes as they are, a path's file, a PIL image as JPEG."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), "frame"
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.read_bytes(), path.name
    if hasattr(image, "save"):
        buffer = io.BytesIO()
        (image if image.mode in ("RGB", "L") else image.convert("RGB")).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "frame.jpg"
    raise TypeError(f"an image is bytes, a path or a PIL image, not {type(image).__name__}")


def frame_of(item: Frame | ImageInput) -> Frame:
    if isinstance(item, Frame):
        return item
    data, name = image_bytes(item)
    return Frame(data, name)


def frame_parts(frames: Iterable[Frame]) -> list[FilePart]:
    """`file` parts, each followed by its `meta` part: the server pairs the n-th meta with the n-th file, so every
    frame gets one (an empty meta takes the file's name)."""
    parts: list[FilePart] = []
    for number, frame in enumerate(frames):
        name = frame.filename or f"frame-{number}"
        meta = (frame.meta or FrameMeta()).model_dump(mode="json", exclude_none=True)
        parts.append(("file", (name, frame.data, media_type(frame.data))))
        parts.append(("meta", (None, json.dumps(meta).encode(), "application/json")))
    return parts


# --- the calls ---------------------------------------------------------------------------------------------------


def create_session(metadata: Mapping[str, Any] | None, ttl_seconds: int | None) -> Call[SessionOut]:
    body: dict[str, Any] = {"metadata": dict(metadata or {})}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return Call("POST", "/sessions", reader(SessionOut), json=body)


def get_session(session_id: str) -> Call[SessionOut]:
    return Call("GET", f"/sessions/{session_id}", reader(SessionOut))


def end_session(session_id: str) -> Call[SessionOut]:
    return Call("POST", f"/sessions/{session_id}/end", reader(SessionOut))


def detect(
    session_id: str,
    data: bytes,
    filename: str,
    options: Mapping[str, Any],
    captured_at: datetime | str | None,
    retry: RetryPolicy,
) -> Call[DetectResponse]:
    params = {**options, "captured_at": captured_at.isoformat() if isinstance(captured_at, datetime) else captured_at}
    files: list[FilePart] = [("file", (filename, data, media_type(data)))]
    return Call("POST", f"/detect/{session_id}", reader(DetectResponse), params=params, files=files, retry=retry)


def history(session_id: str, limit: int, offset: int) -> Call[HistoryPage]:
    params = {"limit": limit, "offset": offset}
    return Call("GET", f"/sessions/{session_id}/detections", reader(HistoryPage), params=params)


def hazards(session_id: str) -> Call[SessionHazards]:
    return Call("GET", f"/sessions/{session_id}/hazards", reader(SessionHazards))


def submit_job(
    name: str | None, session_id: str | None, options: Mapping[str, Any], frames: list[Frame] | None
) -> Call[JobCreated]:
    body = {"name": name, "session_id": session_id, "options": {k: v for k, v in options.items() if v is not None}}
    body = {key: value for key, value in body.items() if value is not None}
    if not frames:
        return Call("POST", "/jobs", reader(JobCreated), json=body)
    files: list[FilePart] = [("job", (None, json.dumps(body).encode(), "application/json")), *frame_parts(frames)]
    return Call("POST", "/jobs", reader(JobCreated), files=files)


def add_frames(job_id: str, frames: list[Frame], retry: RetryPolicy | None) -> Call[FramesAccepted]:
    return Call("POST", f"/jobs/{job_id}/frames", reader(FramesAccepted), files=frame_parts(frames), retry=retry)


def close_job(job_id: str) -> Call[JobOut]:
    return Call("POST", f"/jobs/{job_id}/close", reader(JobOut))


def job_status(job_id: str) -> Call[JobOut]:
    return Call("GET", f"/jobs/{job_id}", reader(JobOut))


def cancel_job(job_id: str) -> Call[JobOut]:
    return Call("DELETE", f"/jobs/{job_id}", reader(JobOut))


def list_jobs(limit: int) -> Call[list[JobOut]]:
    return Call("GET", "/jobs", lambda response: JobList.model_validate_json(response.content).items, {"limit": limit})


def queue_depth() -> Call[QueueDepth]:
    return Call("GET", "/jobs/queue", reader(QueueDepth))


def results_page(job_id: str, offset: int, limit: int) -> Call[JobResultsPage]:
    params = {"offset": offset, "limit": limit}
    return Call("GET", f"/jobs/{job_id}/results", reader(JobResultsPage), params=params)


def job_hazards_geojson(job_id: str) -> Call[dict[str, Any]]:
    """The job's hazards (tracked over its frames in order, one per hazard) with a location: a FeatureCollection."""
    return Call("GET", f"/jobs/{job_id}/hazards.geojson", lambda response: dict(response.json()))


EXPORT_PATHS = {
    "geojson": "/hazards/export.geojson",
    "csv": "/hazards/export.csv",
    "open311": "/hazards/export/open311",
}


def export_hazards(export_format: str, filters: Mapping[str, str | None]) -> Call[bytes]:
    """The hazard registry as GeoJSON, CSV or an Open311 feed (`filters`: bbox, status, label, since)."""
    return Call("GET", EXPORT_PATHS[export_format], lambda response: response.content, params=filters)


def live() -> Call[LiveReport]:
    return Call("GET", "/health/live", reader(LiveReport))


def ready() -> Call[ReadyReport]:
    """A 503 is an answer here (the same report, not ready), and is not retried: the caller asked for the state."""
    return Call("GET", "/health/ready", reader(ReadyReport), retry=RetryPolicy.never(), answers=frozenset({503}))


def deep() -> Call[DeepReport]:
    return Call("GET", "/health/deep", reader(DeepReport), retry=RetryPolicy.never(), answers=frozenset({503}))


def models() -> Call[ModelsOverview]:
    return Call("GET", "/admin/api/models", reader(ModelsOverview))


def fleet() -> Call[FleetOut]:
    return Call("GET", "/admin/api/fleet", reader(FleetOut))


# API keys and operator accounts: the api_key must be an operator token (ADMIN_TOKEN) or an admin-scoped key.


def create_key(
    name: str,
    tenant: str,
    scopes: Iterable[str],
    *,
    expires_at: float | None = None,
    limits: Mapping[str, float | int] | None = None,
    device_profile: Mapping[str, float | str] | None = None,
) -> Call[KeyCreated]:
    """A new key; the answer's `key` is its only copy (the server keeps a hash of it)."""
    body: dict[str, Any] = {"name": name, "tenant": tenant, "scopes": list(scopes)}
    body |= {"expires_at": expires_at} if expires_at is not None else {}
    body |= {"limits": dict(limits)} if limits else {}
    body |= {"device_profile": dict(device_profile)} if device_profile else {}
    return Call("POST", "/admin/api/keys", reader(KeyCreated), json=body)


def list_keys(tenant: str | None = None) -> Call[KeyList]:
    return Call("GET", "/admin/api/keys", reader(KeyList), params={"tenant": tenant})


def get_key(key_id: str) -> Call[KeyOut]:
    return Call("GET", f"/admin/api/keys/{key_id}", reader(KeyOut))


def update_key(key_id: str, changes: Mapping[str, Any]) -> Call[KeyOut]:
    """`changes`: `limits` and/or `device_profile` (None removes the profile); what is not named stays."""
    return Call("PATCH", f"/admin/api/keys/{key_id}", reader(KeyOut), json=dict(changes))


def revoke_key(key_id: str) -> Call[KeyOut]:
    return Call("DELETE", f"/admin/api/keys/{key_id}", reader(KeyOut))


def list_operators() -> Call[OperatorList]:
    return Call("GET", "/admin/api/operators", reader(OperatorList))


def create_operator(name: str, password: str, role: str) -> Call[OperatorOut]:
    body = {"name": name, "password": password, "role": role}
    return Call("POST", "/admin/api/operators", reader(OperatorOut), json=body)


def update_operator(name: str, *, role: str | None = None, disabled: bool | None = None) -> Call[OperatorOut]:
    body = {key: value for key, value in (("role", role), ("disabled", disabled)) if value is not None}
    return Call("PATCH", f"/admin/api/operators/{name}", reader(OperatorOut), json=body)


def audit(limit: int = 50) -> Call[AuditList]:
    return Call("GET", "/admin/api/audit", reader(AuditList), params={"limit": limit})
