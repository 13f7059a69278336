"""Annotated uploads: the real Cloudinary SDK against a local Cloudinary-compatible endpoint, the local
directory and its media route, the spool on disk, the breaker, shedding under a flood, and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.http.errors import install_error_handlers
from app.http.routers.media import create_media_router
from app.main import create_app
from app.services.core.errors import SessionStoreUnavailable
from app.services.inference.types import Detection
from app.services.observability.metrics import Metrics
from app.services.uploads.annotate import annotate
from app.services.uploads.delivery import UploadJob
from app.services.uploads.privacy import UploadPrivacy, grown_box
from app.services.uploads.service import UploadService, create_upload_service
from app.services.uploads.spool import Spool, SpoolEntry
from app.settings import Settings
from tests.conftest import RunningApp, wait_until_ready
from tests.support.fake_cloudinary import FakeCloudinary, Mode
from tests.support.images import scene_with_hazards
from tests.support.privacy import high_frequency_energy, mean_difference, outside_regions, shrunk
from tests.support.uploads import FAST_UPLOADS, hazard_frame, history_uploads
from tests.support.waiting import wait_for

MakeSettings = Callable[..., Settings]

# Short clocks so that failure, backoff and recovery all play out within a few seconds.
FAST_RETRIES: dict[str, Any] = {
    "upload_retry_base_seconds": 0.05,
    "upload_retry_max_seconds": 0.2,
    "breaker_fail_max": 2,
    "breaker_reset_seconds": 0.3,
    "cloudinary_timeout_seconds": 0.5,
}


async def eventually(check: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(0.02)


class UrlBook:
    """Where the upload service records outcomes (URLs of landed frames, other statuses); can play a session
    store that is down."""

    def __init__(self) -> None:
        self.urls: dict[tuple[str, str], str] = {}  # (session id, media id) -> URL
        self.statuses: dict[tuple[str, str], str] = {}  # (session id, media id) -> last recorded status
        self.store_down = False

    async def record(self, session_id: str, media_id: str, outcome: str) -> None:
        if self.store_down:
            raise SessionStoreUnavailable()
        recorded = json.loads(outcome)
        self.statuses[(session_id, media_id)] = recorded["status"]
        if "url" in recorded:
            self.urls[(session_id, media_id)] = recorded["url"]


def hazard_job(number: int, session_id: str = "session-1") -> UploadJob:
    """A generated frame and its true hazards, as the detector would report them."""
    frame, jpeg = scene_with_hazards(seed=number, size=(640, 360))
    detections = [Detection(hazard.label, hazard.class_id, 0.9, *hazard.box) for hazard in frame.hazards]
    return UploadJob(session_id, f"request-{number}", jpeg, detections)


def uploads_counted(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("hazard_uploads_total", {"outcome": outcome}) or 0.0


def spool_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("hazard_upload_spool_files")


def spool_files(settings: Settings) -> list[str]:
    return sorted(path.suffix for path in settings.uploads.spool_dir.glob("*"))


@pytest.fixture
def fake_cloudinary() -> Iterator[FakeCloudinary]:
    fake = FakeCloudinary()
    fake.answer("ok")
    yield fake
    fake.stop()


@pytest.fixture
async def start_uploads() -> AsyncIterator[Callable[[Settings, UrlBook], Awaitable[tuple[UploadService, Metrics]]]]:
    """Starts upload services; each still running at the end of the test is stopped."""
    running: list[UploadService] = []

    async def start(settings: Settings, book: UrlBook) -> tuple[UploadService, Metrics]:
        metrics = Metrics()
        service = create_upload_service(settings.uploads, settings.breakers, metrics, book.record)
        await service.start()
        running.append(service)
        return service, metrics

    yield start
    for service in running:
        await service.stop(flush_seconds=0)


# Cloudinary through the real SDK


async def test_upload_lands_in_cloudinary_under_its_media_id_tagged_with_labels(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **FAST_RETRIES)
    book = UrlBook()
    service, metrics = await start_uploads(settings, book)
    job = hazard_job(1)

    assert service.submit(job) is True
    await eventually(lambda: bool(book.urls), what="URL recorded")

    asset = fake_cloudinary.assets[f"hazards/{job.media_id}"]
    assert fake_cloudinary.bad_signatures == 0
    assert asset.folder == "hazards"
    assert sorted(asset.tags) == sorted({d.label for d in job.detections})
    url = book.urls[(job.session_id, job.media_id)]
    assert url == fake_cloudinary.asset_json(asset, False)["secure_url"]
    assert job.session_id not in url and job.request_id not in url
    annotated = Image.open(io.BytesIO(asset.data))
    assert annotated.format == "JPEG" and annotated.size == (640, 360)
    assert asset.data != job.image
    assert uploads_counted(metrics, "uploaded") == 1
    assert service.spooled == 0


@pytest.mark.parametrize("failure", ["error", "hang", "refuse"])
async def test_upload_that_cannot_land_is_spooled_and_lands_after_recovery(
    failure: Mode, make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **FAST_RETRIES)
    book = UrlBook()
    service, metrics = await start_uploads(settings, book)
    fake_cloudinary.answer(failure)
    job = hazard_job(2)

    assert service.submit(job) is True
    await eventually(lambda: uploads_counted(metrics, "spooled") == 1, what="spooled")
    assert spool_gauge(metrics) == 1  # set before the outcome is counted
    # Retries keep failing meanwhile and rewrite the sidecar in a thread, through a temporary file: wait, not peek.
    await eventually(lambda: spool_files(settings) == [".jpg", ".json"], what="frame and sidecar spooled")
    sidecar = json.loads(next(settings.uploads.spool_dir.glob("*.json")).read_text())
    assert (sidecar["session_id"], sidecar["request_id"], sidecar["media_id"]) == (
        job.session_id,
        job.request_id,
        job.media_id,
    )
    assert sidecar["attempts"] >= 1
    assert book.urls == {}
    assert book.statuses == {(job.session_id, job.media_id): "spooled"}

    fake_cloudinary.answer("ok")
    await eventually(lambda: bool(book.urls), what="URL recorded after recovery")
    assert f"hazards/{job.media_id}" in fake_cloudinary.assets
    await eventually(lambda: spool_files(settings) == [], what="spool emptied")
    # The files go inside the worker thread; the gauge is set once that thread has returned to the event loop.
    await eventually(lambda: spool_gauge(metrics) == 0, what="spool gauge back to 0")


async def test_breaker_stops_calling_cloudinary_after_repeated_failures(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **{**FAST_RETRIES, "breaker_reset_seconds": 2.0})
    book = UrlBook()
    service, metrics = await start_uploads(settings, book)
    fake_cloudinary.answer("error")
    jobs = [hazard_job(number) for number in range(10, 14)]

    for job in jobs:
        service.submit(job)
    await eventually(lambda: service.spooled == 4, what="all spooled")

    # Four frames spooled on fewer calls than frames: the breaker refused the rest. A call already under way when it
    # opens still reaches Cloudinary: a new frame's first try and a spooled one's retry run side by side, so one
    # beyond `fail_max` (seen on a loaded machine).
    fail_max = settings.breakers.fail_max
    assert fail_max <= fake_cloudinary.upload_requests <= fail_max + 1 < len(jobs)
    assert service.breaker.state == "open"
    assert metrics.registry.get_sample_value("hazard_breaker_state", {"dependency": "cloudinary"}) == 2

    fake_cloudinary.answer("ok")
    await eventually(lambda: len(book.urls) == 4, within=8.0, what="all land once the breaker lets a trial through")
    assert service.breaker.state == "closed"


async def test_spool_left_by_a_stopped_service_is_uploaded_by_the_next_one(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **FAST_RETRIES)
    fake_cloudinary.answer("refuse")
    first, _ = await start_uploads(settings, UrlBook())
    jobs = [hazard_job(20), hazard_job(21)]
    for job in jobs:
        first.submit(job)
    await eventually(lambda: first.spooled == 2, what="both spooled")
    await first.stop(flush_seconds=0)
    assert spool_files(settings) == [".jpg", ".jpg", ".json", ".json"]

    fake_cloudinary.answer("ok")
    book = UrlBook()
    _, metrics = await start_uploads(settings, book)

    await eventually(lambda: len(book.urls) == 2, what="recovered spool uploaded")
    assert set(book.urls) == {("session-1", job.media_id) for job in jobs}
    await eventually(lambda: spool_files(settings) == [], what="spool emptied")
    assert uploads_counted(metrics, "uploaded") == 2


async def test_queued_uploads_go_to_the_spool_when_shutdown_cannot_wait_for_them(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **{**FAST_RETRIES, "cloudinary_timeout_seconds": 5.0})
    fake_cloudinary.answer("hang")
    service, _ = await start_uploads(settings, UrlBook())
    for number in (30, 31, 32):
        service.submit(hazard_job(number))
    await eventually(lambda: fake_cloudinary.upload_requests == 1, what="first upload hanging")

    started = time.monotonic()
    await service.stop(flush_seconds=0.2)

    assert time.monotonic() - started < 3.0
    assert spool_files(settings).count(".json") == 3
    fake_cloudinary.answer("ok")
    book = UrlBook()
    await start_uploads(settings, book)
    await eventually(lambda: len(book.urls) == 3, what="all three uploaded after restart")


# The local directory, and what the spool keeps besides frames


async def test_local_store_writes_a_file_named_by_media_id_and_records_its_url(
    make_settings: MakeSettings, start_uploads: Any
) -> None:
    settings = make_settings(**FAST_RETRIES)
    book = UrlBook()
    service, _ = await start_uploads(settings, book)
    job = hazard_job(3, session_id="session-local")

    service.submit(job)
    await eventually(lambda: bool(book.urls), what="URL recorded")

    assert book.urls[(job.session_id, job.media_id)] == f"/media/{job.media_id}.jpg"
    stored = settings.uploads.storage_dir / f"{job.media_id}.jpg"
    assert Image.open(stored).size == (640, 360)
    assert [path.name for path in stored.parent.iterdir()] == [f"{job.media_id}.jpg"]


async def test_url_waits_in_the_spool_while_the_session_store_is_down(
    make_settings: MakeSettings, start_uploads: Any
) -> None:
    settings = make_settings(**FAST_RETRIES)
    book = UrlBook()
    book.store_down = True
    service, _ = await start_uploads(settings, book)
    job = hazard_job(4)

    service.submit(job)
    await eventually(lambda: spool_files(settings) == [".json"], what="URL kept in the spool")
    assert (settings.uploads.storage_dir / f"{job.media_id}.jpg").exists()
    sidecar = json.loads(next(settings.uploads.spool_dir.glob("*.json")).read_text())
    assert sidecar["url"] == f"/media/{job.media_id}.jpg"

    book.store_down = False
    await eventually(lambda: bool(book.urls), what="URL recorded once the store is back")
    await eventually(lambda: spool_files(settings) == [], what="spool emptied")


async def test_spool_is_bounded_and_counts_what_it_drops(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, spool_max_files=2, **FAST_RETRIES)
    fake_cloudinary.answer("refuse")
    service, metrics = await start_uploads(settings, UrlBook())

    for number in range(40, 44):
        service.submit(hazard_job(number))
    await eventually(lambda: uploads_counted(metrics, "dropped") == 2, what="two dropped")

    assert uploads_counted(metrics, "spooled") == 2
    assert service.spooled == 2
    assert spool_files(settings).count(".json") == 2


async def test_start_keeps_whole_spool_entries_and_removes_half_written_debris(
    make_settings: MakeSettings, start_uploads: Any
) -> None:
    settings = make_settings(**FAST_RETRIES)
    job = hazard_job(5)
    previous_run = Spool(settings.uploads.spool_dir, max_files=10)
    previous_run.load()
    previous_run.put(SpoolEntry(job.session_id, job.request_id, ["pothole"], spooled_at=time.time()), job.image)
    (settings.uploads.spool_dir / "0123abcd.jpg").write_bytes(b"frame whose sidecar was never written")
    (settings.uploads.spool_dir / ".deadbeef.json.1234.tmp").write_bytes(b"{")
    (settings.uploads.spool_dir / "feedface.json").write_text("{not json")

    book = UrlBook()
    await start_uploads(settings, book)

    await eventually(lambda: bool(book.urls), what="whole entry uploaded")
    await eventually(lambda: list(settings.uploads.spool_dir.iterdir()) == [], what="debris removed")


async def test_flood_sheds_uploads_without_blocking_and_counts_them(
    make_settings: MakeSettings, start_uploads: Any
) -> None:
    settings = make_settings(upload_queue_size=2, **FAST_RETRIES)
    book = UrlBook()
    service, metrics = await start_uploads(settings, book)
    job = hazard_job(6)
    slowest = 0.0
    accepted = []

    for number in range(50):  # no await in between: the worker cannot take anything off the queue
        started = time.perf_counter()
        accepted.append(service.submit(UploadJob(job.session_id, f"flood-{number}", job.image, job.detections)))
        slowest = max(slowest, time.perf_counter() - started)

    assert slowest < 0.005
    assert accepted.count(True) == 2
    assert uploads_counted(metrics, "shed") == 48
    await eventually(lambda: len(book.urls) == 2, what="accepted uploads land")


async def test_check_reports_whether_the_store_is_reachable(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary, start_uploads: Any, tmp_path: Path
) -> None:
    cloud, _ = await start_uploads(make_settings(cloudinary_url=fake_cloudinary.url, **FAST_RETRIES), UrlBook())
    local, _ = await start_uploads(make_settings(**FAST_RETRIES), UrlBook())
    blocked_dir = tmp_path / "a-file"
    blocked_dir.write_text("not a directory")
    unwritable, _ = await start_uploads(make_settings(storage_dir=blocked_dir, **FAST_RETRIES), UrlBook())

    reachable = await cloud.check()
    fake_cloudinary.answer("refuse")
    refused = await cloud.check()

    assert reachable["ok"] is True and reachable["store"] == "cloudinary"
    assert isinstance(reachable["latency_ms"], float)
    assert refused["ok"] is False and refused["breaker"] == "closed"
    assert (await local.check())["ok"] is True
    assert (await unwritable.check())["ok"] is False


# The media route


@pytest.fixture
def media_client(tmp_path: Path) -> Iterator[tuple[httpx.AsyncClient, Path]]:
    storage = tmp_path / "uploads"
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(create_media_router(storage))
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver"), storage


MEDIA_ID = "0123456789abcdef0123456789abcdef"


async def test_media_route_serves_stored_frames_read_only(media_client: tuple[httpx.AsyncClient, Path]) -> None:
    client, storage = media_client
    storage.mkdir(parents=True)
    frame = scene_with_hazards(9, (320, 180))[1]
    (storage / f"{MEDIA_ID}.jpg").write_bytes(frame)

    response = await client.get(f"/media/{MEDIA_ID}.jpg")
    head = await client.head(f"/media/{MEDIA_ID}.jpg")
    write = await client.put(f"/media/{MEDIA_ID}.jpg", content=b"overwrite")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == frame
    assert head.status_code == 200
    assert write.status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "/media/fedcba9876543210fedcba9876543210.jpg",  # the shape of a media id, nothing stored
        "/media/session-9/request-9.jpg",  # the layout that named files after the session and request ids
        "/media/..%2Foutside.jpg",
        f"/media/{MEDIA_ID}.jpg%2F..%2F..%2Foutside.jpg",
        "/media/%2Fetc%2Fhostname",
        f"/media/.{MEDIA_ID}.jpg.0a1b.tmp",
        "/media/notes.txt",
        "/media/0123456789ABCDEF0123456789ABCDEF.jpg",  # upper case: not what is issued
        "/media/abcdef0123456789abcdef0123456789.jpg",  # the right shape, but a link out of the store
    ],
)
async def test_media_route_answers_404_for_anything_but_a_stored_frame(
    path: str, media_client: tuple[httpx.AsyncClient, Path]
) -> None:
    client, storage = media_client
    folder = storage / "session-9"
    folder.mkdir(parents=True)
    outside = storage.parent / "outside.jpg"
    outside.write_bytes(b"secret")
    (folder / "request-9.jpg").write_bytes(b"secret")
    (storage / f".{MEDIA_ID}.jpg.0a1b.tmp").write_bytes(b"half written")
    (storage / "notes.txt").write_text("not a frame")
    (storage / "abcdef0123456789abcdef0123456789.jpg").symlink_to(outside)

    response = await client.get(path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEDIA_NOT_FOUND"
    assert b"secret" not in response.content


# End to end: the app, the model, Redis


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[RunningApp]:
    """An app that a test can stop and start again (the start_app fixture stops apps only at the end)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        await wait_until_ready(client, within_seconds=60)
        yield RunningApp(app, client)


async def detect(running: RunningApp, session_id: str, jpeg: bytes) -> httpx.Response:
    response = await running.client.post(f"/detect/{session_id}", content=jpeg, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response


async def upload_of(running: RunningApp, session_id: str, request_id: str) -> dict[str, Any]:
    response = await running.client.get(f"/sessions/{session_id}/detections", params={"limit": 50})
    entry = next(item for item in response.json()["items"] if item["request_id"] == request_id)
    return dict(entry["upload"])


async def eventually_uploaded(running: RunningApp, session_id: str, request_id: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while (upload := await upload_of(running, session_id, request_id))["status"] != "uploaded":
        assert time.monotonic() < deadline, f"upload of {request_id} still {upload}"
        await asyncio.sleep(0.05)
    return str(upload["url"])


def upload_worthy_frame() -> bytes:
    frame, jpeg = scene_with_hazards(seed=3, size=(1280, 720))
    assert frame.hazards
    return jpeg


async def test_frame_with_hazards_is_stored_locally_served_and_linked_in_history(
    make_settings: MakeSettings, start_app: Any
) -> None:
    settings = make_settings(upload_min_confidence=0.3)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()

    response = await detect(running, session_id, upload_worthy_frame())
    request_id = response.json()["request_id"]
    assert response.json()["detections"]
    url = await eventually_uploaded(running, session_id, request_id)

    assert re.fullmatch(r"/media/[0-9a-f]{32}\.jpg", url), url
    assert session_id not in url and request_id not in url  # the session id is the client's only credential
    assert (settings.uploads.storage_dir / url.removeprefix("/media/")).is_file()
    served = await running.client.get(url)
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).size == (1280, 720)


async def test_hazards_only_privacy_stores_a_frame_blurred_outside_the_hazards(
    make_settings: MakeSettings, start_app: Any
) -> None:
    settings = make_settings(upload_min_confidence=0.3, upload_privacy="hazards_only")
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    jpeg = upload_worthy_frame()

    response = await detect(running, session_id, jpeg)
    url = await eventually_uploaded(running, session_id, response.json()["request_id"])

    detections = [
        Detection(item["label"], 0, item["confidence"], *(item["box"][k] for k in ("x1", "y1", "x2", "y2")))
        for item in response.json()["detections"]
    ]
    stored = Image.open(settings.uploads.storage_dir / url.removeprefix("/media/"))
    sharp = Image.open(io.BytesIO(annotate(jpeg, detections, UploadPrivacy.FULL)))
    boxes = [grown_box(detection, stored.size) for detection in detections]
    large = [box for box in boxes if min(box[2] - box[0], box[3] - box[1]) > 64]
    assert large
    for box in large:  # the hazards as stored with `full`, past their drawn outlines and JPEG block edges
        assert mean_difference(stored, sharp, shrunk(box, 24)) < 2.0
    regions = outside_regions(stored.size, boxes)
    assert regions
    for region in regions:
        assert high_frequency_energy(stored, region) < high_frequency_energy(sharp, region) / 2


async def test_frame_without_hazards_is_not_uploaded(make_settings: MakeSettings, start_app: Any) -> None:
    settings = make_settings()
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    jpeg = io.BytesIO()
    Image.new("RGB", (640, 360), (90, 90, 94)).save(jpeg, format="JPEG")

    response = await detect(running, session_id, jpeg.getvalue())

    assert await upload_of(running, session_id, response.json()["request_id"]) == {"status": "none"}
    assert not settings.uploads.storage_dir.exists() or not any(settings.uploads.storage_dir.rglob("*.jpg"))


async def test_upload_flood_sheds_uploads_but_every_frame_is_answered(
    make_settings: MakeSettings, start_app: Any, fake_cloudinary: FakeCloudinary
) -> None:
    settings = make_settings(
        cloudinary_url=fake_cloudinary.url,
        upload_queue_size=1,
        upload_min_confidence=0.3,
        upload_flush_seconds=0.2,
        cloudinary_timeout_seconds=5.0,
    )
    fake_cloudinary.answer("hang")  # the worker is stuck on the first upload: the queue stays full
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    jpeg = upload_worthy_frame()

    latencies, request_ids = [], []
    for _ in range(6):
        started = time.perf_counter()
        response = await detect(running, session_id, jpeg)
        latencies.append(time.perf_counter() - started)
        request_ids.append(response.json()["request_id"])
    statuses = [(await upload_of(running, session_id, rid))["status"] for rid in request_ids]

    metrics = running.app.state.parts.metrics
    assert statuses.count("pending") in (1, 2)
    assert statuses.count("shed") == 6 - statuses.count("pending")
    assert uploads_counted(metrics, "shed") == statuses.count("shed")
    assert max(latencies) < 2.0, latencies


async def test_app_restart_with_a_non_empty_spool_uploads_it_and_links_it_in_history(
    make_settings: MakeSettings, fake_cloudinary: FakeCloudinary
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, upload_min_confidence=0.3, **FAST_RETRIES)
    fake_cloudinary.answer("refuse")
    async with running_app(settings) as first:
        session_id = await first.new_session()
        request_id = (await detect(first, session_id, upload_worthy_frame())).json()["request_id"]
        uploads = first.app.state.parts.uploads.service
        await eventually(lambda: uploads.spooled == 1, what="upload spooled")
        assert (await upload_of(first, session_id, request_id))["status"] == "spooled"
    assert spool_files(settings) == [".jpg", ".json"]

    fake_cloudinary.answer("ok")
    async with running_app(settings) as second:
        url = await eventually_uploaded(second, session_id, request_id)

    (asset,) = fake_cloudinary.assets.values()
    assert url == fake_cloudinary.asset_json(asset, False)["secure_url"]
    assert session_id not in url
    assert spool_files(settings) == []


async def test_uploads_are_throttled_per_session(make_settings: MakeSettings, start_app: Any) -> None:
    settings = make_settings(upload_min_confidence=0.3, upload_min_interval_seconds=60)
    running: RunningApp = await start_app(settings)
    first_session, second_session = await running.new_session(), await running.new_session()
    jpeg = upload_worthy_frame()

    first = (await detect(running, first_session, jpeg)).json()["request_id"]
    throttled = (await detect(running, first_session, jpeg)).json()["request_id"]
    other = (await detect(running, second_session, jpeg)).json()["request_id"]

    assert (await upload_of(running, first_session, throttled))["status"] == "skipped"
    first_url = await eventually_uploaded(running, first_session, first)
    other_url = await eventually_uploaded(running, second_session, other)
    stored = sorted(f"/media/{p.name}" for p in settings.uploads.storage_dir.rglob("*.jpg"))
    assert stored == sorted([first_url, other_url])


async def test_an_upload_the_spool_cannot_take_settles_as_dropped_in_history(
    make_settings: Any, start_app: Any, fake_cloudinary: FakeCloudinary
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, spool_max_files=1, **FAST_UPLOADS)
    fake_cloudinary.answer("error")
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    for seed in (3, 4):
        response = await running.client.post(
            f"/detect/{session_id}", content=hazard_frame(seed), headers={"content-type": "image/jpeg"}
        )
        assert response.status_code == 200

    async def settled() -> bool:
        return sorted(u["status"] for u in await history_uploads(running.client, session_id)) == ["dropped", "spooled"]

    await wait_for(settled, "one spooled, one dropped (the spool holds one)", within=10)


async def test_start_removes_stale_temporaries_and_keeps_local_storage_within_its_bounds(
    make_settings: Any, start_app: Any
) -> None:
    settings = make_settings(local_storage_max_mb=1, local_storage_max_age_seconds=3600, **FAST_UPLOADS)
    storage = settings.uploads.storage_dir
    legacy = storage / "a-session-id-from-an-older-layout"
    legacy.mkdir(parents=True)
    # What a crash (or an older version) left: a half-written temporary, a probe, frames of every age and size.
    (storage / ".0123456789abcdef0123456789abcdef.jpg.0a1b2c.tmp").write_bytes(b"half a frame")
    (legacy / ".request-1.jpg.3d4e5f.tmp").write_bytes(b"half a frame")
    (storage / ".probe-9f8e7d").write_bytes(b"ok")
    now = time.time()
    frames = {
        "too-old": (legacy / "request-0.jpg", 10, now - 7200),
        "oldest": (storage / f"{'a' * 32}.jpg", 600 * 1024, now - 300),
        "older": (storage / f"{'b' * 32}.jpg", 300 * 1024, now - 200),
        "newest": (storage / f"{'c' * 32}.jpg", 300 * 1024, now - 100),
    }
    for path, size, modified_at in frames.values():
        path.write_bytes(b"\xff" * size)
        os.utime(path, (modified_at, modified_at))

    running: RunningApp = await start_app(settings)

    left = sorted(path.relative_to(storage).as_posix() for path in storage.rglob("*") if path.is_file())
    assert left == [f"{'b' * 32}.jpg", f"{'c' * 32}.jpg"]  # 1.2 MiB -> 600 KiB: the oldest went first
    # A new frame pushes the oldest out again: the store never holds more than LOCAL_STORAGE_MAX_MB.
    session_id = await running.new_session()
    await running.client.post(f"/detect/{session_id}", content=hazard_frame(), headers={"content-type": "image/jpeg"})

    async def landed() -> bool:
        return bool((await history_uploads(running.client, session_id))[0]["status"] == "uploaded")

    await wait_for(landed, "upload landed", within=10)
    total = sum(path.stat().st_size for path in storage.rglob("*.jpg"))
    assert total <= 1024 * 1024
    deep = (await running.client.get("/health/deep")).json()["checks"]["storage"]
    assert deep["frames"] == len(list(storage.rglob("*.jpg"))) and deep["bytes"] == total
