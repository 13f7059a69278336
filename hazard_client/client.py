"""`HazardClient` and its async twin `AsyncHazardClient`: one method per API call, typed answers, errors as
exceptions, refusals with `Retry-After` retried (see retry.py), one pooled httpx client per instance.

    with HazardClient("http://127.0.0.1:8000") as client:
        session = client.create_session({"vehicle": "van-7"})
        answer = client.detect(session.session_id, "frame.jpg", lat=52.52, lon=13.40)
        print([(d.label, d.confidence) for d in answer.detections])
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from itertools import count
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from hazard_client import __version__, calls
from hazard_client.calls import Call, Frame, ImageInput
from hazard_client.errors import ApiError, ConnectionFailed
from hazard_client.models import (
    AuditList,
    DeepReport,
    DetectResponse,
    FleetOut,
    FramesAccepted,
    HistoryPage,
    JobCreated,
    JobOut,
    JobResultItem,
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
from hazard_client.retry import DEFAULT_RETRY, DETECT_RETRY, RetryPolicy
from hazard_client.stream import FrameStream, stream_url

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
RESULTS_PAGE = 200  # the server's page limit is 500


def _client_args(base_url: str, timeout: float, api_key: str | None, max_connections: int) -> dict[str, Any]:
    headers = {"user-agent": f"hazard-client/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return {
        "base_url": base_url.rstrip("/"),
        "headers": headers,
        # Connecting is quick or hopeless: a dead server is reported in seconds, not after the read timeout.
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        "limits": httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    }


def _job_options(conf: float | None, iou: float | None, max_det: int | None, model: str | None) -> dict[str, Any]:
    return {"conf": conf, "iou": iou, "max_det": max_det, "model": model}


class HazardClient:
    """Synchronous client; safe to share between threads (httpx's pool is)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        detect_retry: RetryPolicy = DETECT_RETRY,
        max_connections: int = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.detect_retry = detect_retry
        self._http = httpx.Client(transport=transport, **_client_args(base_url, timeout, api_key, max_connections))

    @property
    def http(self) -> httpx.Client:
        """The pooled httpx client underneath (event hooks, proxies, ...)."""
        return self._http

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        policy = call.retry or self.retry
        request_id = uuid.uuid4().hex
        waited = 0.0
        for attempt in count():
            try:
                response = self._http.request(call.method, call.path, **call.send_args(request_id))
            except httpx.TransportError as exc:
                raise calls.connection_failed(exc, self.base_url, request_id) from exc
            try:
                return call.result(response, request_id)
            except ApiError as error:
                delay = policy.delay(attempt, error, waited)
                if delay is None:
                    raise
                if policy.on_retry is not None:
                    policy.on_retry(error, delay)
                time.sleep(delay)
                waited += delay
        raise AssertionError("unreachable")

    # Sessions and live frames

    def create_session(self, metadata: Mapping[str, Any] | None = None, ttl_seconds: int | None = None) -> SessionOut:
        return self.send(calls.create_session(metadata, ttl_seconds))

    def get_session(self, session_id: str) -> SessionOut:
        return self.send(calls.get_session(session_id))

    def end_session(self, session_id: str) -> SessionOut:
        return self.send(calls.end_session(session_id))

    def detect(
        self,
        session_id: str,
        image: ImageInput,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        model: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        heading: float | None = None,
        speed_mps: float | None = None,
        captured_at: datetime | str | None = None,
        retry: RetryPolicy | None = None,
    ) -> DetectResponse:
        """Hazards on one frame (bytes, a path or a PIL image). Not retried unless `retry` (or the client's
        `detect_retry`) says so: a live frame that waited is stale."""
        data, filename = calls.image_bytes(image)
        options = {"conf": conf, "iou": iou, "max_det": max_det, "model": model}
        options |= {"lat": lat, "lon": lon, "heading": heading, "speed_mps": speed_mps}
        return self.send(calls.detect(session_id, data, filename, options, captured_at, retry or self.detect_retry))

    def history(self, session_id: str, limit: int = 20, offset: int = 0) -> HistoryPage:
        return self.send(calls.history(session_id, limit, offset))

    def hazards(self, session_id: str) -> SessionHazards:
        return self.send(calls.hazards(session_id))

    # Batch jobs

    def submit_job(
        self,
        name: str | None = None,
        session_id: str | None = None,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        model: str | None = None,
        frames: Iterable[Frame | ImageInput] | None = None,
    ) -> JobCreated:
        """Create a job, with its first frames when given (one call)."""
        batch = [calls.frame_of(item) for item in frames or ()]
        return self.send(calls.submit_job(name, session_id, _job_options(conf, iou, max_det, model), batch))

    def add_frames(
        self, job_id: str, frames: Iterable[Frame | ImageInput], retry: RetryPolicy | None = None
    ) -> FramesAccepted:
        """All of them or none: a BACKPRESSURE refusal is retried by the policy, then raised."""
        return self.send(calls.add_frames(job_id, [calls.frame_of(item) for item in frames], retry))

    def close_job(self, job_id: str) -> JobOut:
        return self.send(calls.close_job(job_id))

    def job_status(self, job_id: str) -> JobOut:
        return self.send(calls.job_status(job_id))

    def cancel_job(self, job_id: str) -> JobOut:
        return self.send(calls.cancel_job(job_id))

    def list_jobs(self, limit: int = 50) -> list[JobOut]:
        return self.send(calls.list_jobs(limit))

    def queue_depth(self) -> QueueDepth:
        return self.send(calls.queue_depth())

    def results_page(self, job_id: str, offset: int = 0, limit: int = 100) -> JobResultsPage:
        return self.send(calls.results_page(job_id, offset, limit))

    def job_hazards_geojson(self, job_id: str) -> dict[str, Any]:
        return self.send(calls.job_hazards_geojson(job_id))

    def iter_results(self, job_id: str, page_size: int = RESULTS_PAGE) -> Iterator[JobResultItem]:
        """Every finished frame's result, in frame order (frames still waiting are not there yet)."""
        offset, total = 0, 1
        while offset < total:
            page = self.results_page(job_id, offset, page_size)
            yield from page.items
            offset, total = offset + page_size, page.total

    def wait_job(self, job_id: str, timeout: float | None = None, poll_seconds: float = 0.5) -> JobOut:
        """Poll until the job has finished (completed, failed or cancelled); TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (job := self.job_status(job_id)).finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} has not finished within {timeout} s")
            time.sleep(poll_seconds)
        return job

    # Health and the fleet

    def live(self) -> LiveReport:
        return self.send(calls.live())

    def export_hazards(self, export_format: str, **filters: str | None) -> bytes:
        """The registry's hazards as `geojson`, `csv` or `open311`, filtered by bbox, status, label and since."""
        return self.send(calls.export_hazards(export_format, filters))

    def ready(self) -> ReadyReport:
        return self.send(calls.ready())

    def deep(self) -> DeepReport:
        return self.send(calls.deep())

    def models(self) -> ModelsOverview:
        """The fleet's model versions (needs the admin token as `api_key`)."""
        return self.send(calls.models())

    def fleet(self) -> FleetOut:
        return self.send(calls.fleet())

    # API keys and operators (admin API: `api_key` is an operator token or an admin-scoped key)

    def create_key(
        self,
        name: str,
        tenant: str,
        scopes: Iterable[str],
        *,
        expires_at: float | None = None,
        limits: Mapping[str, float | int] | None = None,
        device_profile: Mapping[str, float | str] | None = None,
    ) -> KeyCreated:
        """A new API key; `.key` is shown this once."""
        return self.send(
            calls.create_key(name, tenant, scopes, expires_at=expires_at, limits=limits, device_profile=device_profile)
        )

    def list_keys(self, tenant: str | None = None) -> KeyList:
        return self.send(calls.list_keys(tenant))

    def get_key(self, key_id: str) -> KeyOut:
        return self.send(calls.get_key(key_id))

    def update_key(self, key_id: str, **changes: Any) -> KeyOut:
        return self.send(calls.update_key(key_id, changes))

    def revoke_key(self, key_id: str) -> KeyOut:
        return self.send(calls.revoke_key(key_id))

    def list_operators(self) -> OperatorList:
        return self.send(calls.list_operators())

    def create_operator(self, name: str, password: str, role: str) -> OperatorOut:
        return self.send(calls.create_operator(name, password, role))

    def update_operator(self, name: str, *, role: str | None = None, disabled: bool | None = None) -> OperatorOut:
        return self.send(calls.update_operator(name, role=role, disabled=disabled))

    def audit(self, limit: int = 50) -> AuditList:
        return self.send(calls.audit(limit))


class AsyncHazardClient:
    """The same calls for asyncio; one instance per event loop."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        detect_retry: RetryPolicy = DETECT_RETRY,
        max_connections: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.detect_retry = detect_retry
        self._http = httpx.AsyncClient(transport=transport, **_client_args(base_url, timeout, api_key, max_connections))

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    def stream(self, session_id: str) -> FrameStream:
        """A live frame stream of the session, one WebSocket (`async with`): send frames, iterate answers."""
        headers = {key: value for key, value in self._http.headers.items() if key in ("authorization", "user-agent")}
        return FrameStream(stream_url(self.base_url, session_id), headers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        policy = call.retry or self.retry
        request_id = uuid.uuid4().hex
        waited = 0.0
        for attempt in count():
            try:
                response = await self._http.request(call.method, call.path, **call.send_args(request_id))
            except httpx.TransportError as exc:
                raise calls.connection_failed(exc, self.base_url, request_id) from exc
            try:
                return call.result(response, request_id)
            except ApiError as error:
                delay = policy.delay(attempt, error, waited)
                if delay is None:
                    raise
                if policy.on_retry is not None:
                    policy.on_retry(error, delay)
                await asyncio.sleep(delay)
                waited += delay
        raise AssertionError("unreachable")

    async def create_session(
        self, metadata: Mapping[str, Any] | None = None, ttl_seconds: int | None = None
    ) -> SessionOut:
        return await self.send(calls.create_session(metadata, ttl_seconds))

    async def get_session(self, session_id: str) -> SessionOut:
        return await self.send(calls.get_session(session_id))

    async def end_session(self, session_id: str) -> SessionOut:
        return await self.send(calls.end_session(session_id))

    async def detect(
        self,
        session_id: str,
        image: ImageInput,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        model: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        heading: float | None = None,
        speed_mps: float | None = None,
        captured_at: datetime | str | None = None,
        retry: RetryPolicy | None = None,
    ) -> DetectResponse:
        data, filename = await asyncio.to_thread(calls.image_bytes, image)
        options = {"conf": conf, "iou": iou, "max_det": max_det, "model": model}
        options |= {"lat": lat, "lon": lon, "heading": heading, "speed_mps": speed_mps}
        return await self.send(
            calls.detect(session_id, data, filename, options, captured_at, retry or self.detect_retry)
        )

    async def history(self, session_id: str, limit: int = 20, offset: int = 0) -> HistoryPage:
        return await self.send(calls.history(session_id, limit, offset))

    async def hazards(self, session_id: str) -> SessionHazards:
        return await self.send(calls.hazards(session_id))

    async def submit_job(
        self,
        name: str | None = None,
        session_id: str | None = None,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        model: str | None = None,
        frames: Iterable[Frame | ImageInput] | None = None,
    ) -> JobCreated:
        batch = await asyncio.to_thread(lambda: [calls.frame_of(item) for item in frames or ()])
        return await self.send(calls.submit_job(name, session_id, _job_options(conf, iou, max_det, model), batch))

    async def add_frames(
        self, job_id: str, frames: Iterable[Frame | ImageInput], retry: RetryPolicy | None = None
    ) -> FramesAccepted:
        batch = await asyncio.to_thread(lambda: [calls.frame_of(item) for item in frames])
        return await self.send(calls.add_frames(job_id, batch, retry))

    async def close_job(self, job_id: str) -> JobOut:
        return await self.send(calls.close_job(job_id))

    async def job_status(self, job_id: str) -> JobOut:
        return await self.send(calls.job_status(job_id))

    async def cancel_job(self, job_id: str) -> JobOut:
        return await self.send(calls.cancel_job(job_id))

    async def list_jobs(self, limit: int = 50) -> list[JobOut]:
        return await self.send(calls.list_jobs(limit))

    async def queue_depth(self) -> QueueDepth:
        return await self.send(calls.queue_depth())

    async def results_page(self, job_id: str, offset: int = 0, limit: int = 100) -> JobResultsPage:
        return await self.send(calls.results_page(job_id, offset, limit))

    async def job_hazards_geojson(self, job_id: str) -> dict[str, Any]:
        return await self.send(calls.job_hazards_geojson(job_id))

    async def iter_results(self, job_id: str, page_size: int = RESULTS_PAGE) -> AsyncIterator[JobResultItem]:
        offset, total = 0, 1
        while offset < total:
            page = await self.results_page(job_id, offset, page_size)
            for item in page.items:
                yield item
            offset, total = offset + page_size, page.total

    async def wait_job(self, job_id: str, poll_seconds: float = 0.5) -> JobOut:
        """Poll until the job has finished; bound it with `asyncio.timeout` where it must end."""
        # The API announces no completion: polling its counters is the protocol.
        while not (job := await self.job_status(job_id)).finished:  # noqa: ASYNC110
            await asyncio.sleep(poll_seconds)
        return job

    async def live(self) -> LiveReport:
        return await self.send(calls.live())

    async def ready(self) -> ReadyReport:
        return await self.send(calls.ready())

    async def deep(self) -> DeepReport:
        return await self.send(calls.deep())

    async def models(self) -> ModelsOverview:
        return await self.send(calls.models())

    async def fleet(self) -> FleetOut:
        return await self.send(calls.fleet())

    # API keys and operators (admin API: `api_key` is an operator token or an admin-scoped key)

    async def create_key(
        self,
        name: str,
        tenant: str,
        scopes: Iterable[str],
        *,
        expires_at: float | None = None,
        limits: Mapping[str, float | int] | None = None,
        device_profile: Mapping[str, float | str] | None = None,
    ) -> KeyCreated:
        """A new API key; `.key` is shown this once."""
        return await self.send(
            calls.create_key(name, tenant, scopes, expires_at=expires_at, limits=limits, device_profile=device_profile)
        )

    async def list_keys(self, tenant: str | None = None) -> KeyList:
        return await self.send(calls.list_keys(tenant))

    async def get_key(self, key_id: str) -> KeyOut:
        return await self.send(calls.get_key(key_id))

    async def update_key(self, key_id: str, **changes: Any) -> KeyOut:
        return await self.send(calls.update_key(key_id, changes))

    async def revoke_key(self, key_id: str) -> KeyOut:
        return await self.send(calls.revoke_key(key_id))

    async def list_operators(self) -> OperatorList:
        return await self.send(calls.list_operators())

    async def create_operator(self, name: str, password: str, role: str) -> OperatorOut:
        return await self.send(calls.create_operator(name, password, role))

    async def update_operator(self, name: str, *, role: str | None = None, disabled: bool | None = None) -> OperatorOut:
        return await self.send(calls.update_operator(name, role=role, disabled=disabled))

    async def audit(self, limit: int = 50) -> AuditList:
        return await self.send(calls.audit(limit))


__all__ = ["AsyncHazardClient", "ConnectionFailed", "Frame", "HazardClient"]
