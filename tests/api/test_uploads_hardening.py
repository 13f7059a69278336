"""Findings of the security review about uploads, media and disk (issue 15, items 3, 9, 10 and 12, and the disk-full
and SIGKILL faults): stored names are server-generated, media URLs name no session, every answer says nosniff,
every upload settles in history, the local store is bounded, and a full disk or a killed process loses nothing
that was promised."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.services.uploads.ledger import MEDIA_ID
from tests.conftest import RunningApp
from tests.support.fake_cloudinary import FakeCloudinary
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.support.waiting import wait_for

SETTLED = {"uploaded", "spooled", "dropped", "failed", "shed", "skipped", "none", "lost"}
# Uploads fail fast and are retried fast: what a test waits for plays out within a few seconds. Every frame's
# hazards are new ones (tracks confirmed at once, closed at once), so every frame with hazards is uploaded.
FAST_UPLOADS: dict[str, Any] = {
    "track_min_hits": 1,
    "track_max_gap_seconds": 0.001,
    "upload_min_confidence": 0.3,
    "upload_retry_base_seconds": 0.05,
    "upload_retry_max_seconds": 0.2,
    "breaker_fail_max": 1,
    "breaker_reset_seconds": 0.3,
    "cloudinary_timeout_seconds": 0.5,
}


def hazard_frame(seed: int = 3) -> bytes:
    frame, jpeg = scene_with_hazards(seed=seed, size=(1280, 720))
    assert frame.hazards
    return jpeg


@pytest.fixture
def fake_cloudinary() -> Iterator[FakeCloudinary]:
    fake = FakeCloudinary()
    fake.answer("ok")
    yield fake
    fake.stop()


async def history_uploads(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/detections", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [{"request_id": item["request_id"], **item["upload"]} for item in response.json()["items"]]


# Item 3: stored names are the server's, never the client's request id


async def test_two_frames_with_one_request_id_are_two_files_each_entry_pointing_at_its_own(
    make_settings: Any, start_app: Any
) -> None:
    settings = make_settings(**FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    frames = [hazard_frame(3), hazard_frame(4)]

    for frame in frames:
        response = await running.client.post(
            f"/detect/{session_id}",
            content=frame,
            headers={"content-type": "image/jpeg", "x-request-id": "same-id-twice"},
        )
        assert response.status_code == 200 and response.json()["request_id"] == "same-id-twice"

    async def both_uploaded() -> bool:
        return [u["status"] for u in await history_uploads(running.client, session_id)] == ["uploaded"] * 2

    await wait_for(both_uploaded, "both uploads landed", within=10)
    urls = [u["url"] for u in await history_uploads(running.client, session_id)]
    assert len(set(urls)) == 2, urls
    assert len(list(settings.uploads.storage_dir.rglob("*.jpg"))) == 2
    # Newest first: each entry serves its own frame (the annotated copy keeps the frame's size and look).
    served = [(await running.client.get(url)).content for url in urls]
    assert served[0] != served[1]
    assert all("same-id-twice" not in url and session_id not in url for url in urls)


async def test_cloudinary_public_ids_are_media_ids_not_request_or_session_ids(
    make_settings: Any, start_app: Any, fake_cloudinary: FakeCloudinary
) -> None:
    settings = make_settings(cloudinary_url=fake_cloudinary.url, **FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    for seed in (3, 4):
        headers = {"content-type": "image/jpeg", "x-request-id": "replayed"}
        response = await running.client.post(f"/detect/{session_id}", content=hazard_frame(seed), headers=headers)
        assert response.status_code == 200

    async def two_assets() -> bool:
        return len(fake_cloudinary.assets) == 2

    await wait_for(two_assets, "two assets in Cloudinary", within=10)
    for public_id in fake_cloudinary.assets:
        folder, name = public_id.split("/")
        assert folder == "hazards" and MEDIA_ID.fullmatch(name), public_id


# Item 10: media URLs reveal no session id; nosniff on every answer; media ids checked before the disk


async def test_every_answer_says_nosniff_media_errors_included(make_settings: Any, start_app: Any) -> None:
    settings = make_settings(**FAST_UPLOADS)
    running: RunningApp = await start_app(settings)
    session_id = await running.new_session()
    response = await running.client.post(
        f"/detect/{session_id}", content=hazard_frame(), headers={"content-type": "image/jpeg"}
    )

    async def uploaded() -> bool:
        return bool((await history_uploads(running.client, session_id))[0]["status"] == "uploaded")

    await wait_for(uploaded, "upload landed", within=10)
    url = (await history_uploads(running.client, session_id))[0]["url"]
    answers = {
        "media 200": await running.client.get(url),
        "media HEAD": await running.client.head(url),
        "media 404": await running.client.get("/media/0123456789abcdef0123456789abcdef.jpg"),
        "media 404 by shape": await running.client.get(f"/media/{session_id}/{response.json()['request_id']}.jpg"),
        "media 405": await running.client.put(url, content=b"x"),
        "detect 200": response,
        "session 404": await running.client.get("/sessions/not-a-session"),
        "live": await running.client.get("/health/live"),
        "unrouted 404": await running.client.get("/nowhere"),
    }
    assert answers["media 200"].status_code == 200
    assert answers["media 405"].status_code == 405
    assert answers["media 404 by shape"].json()["error"]["code"] == "MEDIA_NOT_FOUND"
    missing = {name for name, answer in answers.items() if answer.headers.get("x-content-type-options") != "nosniff"}
    assert missing == set()


# Item 9: no upload stays pending forever


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


# Item 12: stale temporaries cleaned, local storage bounded


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


# Faults with a real server process


def upload_statuses(server: Server, session_id: str) -> list[dict[str, Any]]:
    """Every history entry's upload, page by page (a page holds at most 200; a burst test keeps up to 450)."""
    items: list[dict[str, Any]] = []
    while True:
        params = {"limit": 200, "offset": len(items)}
        response = httpx.get(f"{server.base_url}/sessions/{session_id}/detections", params=params, timeout=5)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if not page["items"] or len(items) >= page["total"]:
            return [{"request_id": item["request_id"], **item["upload"]} for item in items]


def metric(server: Server, name: str, labels: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def new_session(server: Server) -> str:
    response = httpx.post(f"{server.base_url}/sessions", json={}, timeout=5)
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def post_frame(client: httpx.Client, server: Server, session_id: str, frame: bytes) -> httpx.Response:
    return client.post(
        f"{server.base_url}/detect/{session_id}", content=frame, headers={"content-type": "image/jpeg"}, timeout=10
    )


def wait_until(condition: Any, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not met within {within} s"
        time.sleep(0.05)


def fault_server_env(fake: FakeCloudinary, model_cache: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CLOUDINARY_URL": fake.url,
        "MODEL_CACHE_DIR": str(model_cache),
        "MODEL_WARMUP_REQUESTS": "1",
        "SPOOL_DIR": str(tmp_path / "spool"),
        "STORAGE_DIR": str(tmp_path / "uploads"),
        "LOG_LEVEL": "WARNING",
        "HEALTH_DEEP_CACHE_SECONDS": "0",
        "TRACK_MIN_HITS": "1",
        "TRACK_MAX_GAP_SECONDS": "0.001",
        "UPLOAD_MIN_CONFIDENCE": "0.3",
        "UPLOAD_MIN_INTERVAL_SECONDS": "0",
        "UPLOAD_RETRY_BASE_SECONDS": "0.05",
        "UPLOAD_RETRY_MAX_SECONDS": "0.2",
        "CLOUDINARY_TIMEOUT_SECONDS": "0.5",
        "SESSION_RATE_LIMIT_PER_SECOND": "1000",
        "SESSION_RATE_LIMIT_BURST": "1000",
        **extra,
    }


def test_a_full_spool_disk_keeps_detection_answering_counts_and_shows_it_and_resumes_when_space_returns(
    redis_server: RedisProcess, fake_cloudinary: FakeCloudinary, model_cache: Path, tmp_path: Path
) -> None:
    """The disk is made full for the server process alone, without root: RLIMIT_FSIZE (set on the running process
    with prlimit) makes the kernel refuse any write that would take a file past 4 KiB, as a full disk refuses it
    (EFBIG instead of ENOSPC; Python ignores SIGXFSZ, so the write fails instead of killing the process). A 4 KiB
    limit lets a frame's temporary be created and half written before the write fails: that is what must not stay
    behind. Raising the limit again is the space coming back."""
    fake_cloudinary.answer("error")  # every upload goes to the spool
    env = fault_server_env(fake_cloudinary, model_cache, tmp_path, BREAKER_FAIL_MAX="1", BREAKER_RESET_SECONDS="1")
    server = Server(redis_server.url, tmp_path, **env)
    spool = tmp_path / "spool"
    try:
        server.wait_ready()
        session_id = new_session(server)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (4096, hard))
        with httpx.Client() as client:
            answers = [post_frame(client, server, session_id, hazard_frame(seed)).status_code for seed in (3, 4, 5)]
        assert answers == [200, 200, 200]

        wait_until(
            lambda: [u["status"] for u in upload_statuses(server, session_id)] == ["dropped"] * 3,
            "every upload settled as dropped",
        )
        assert metric(server, "hazard_upload_disk_errors_total", 'directory="spool"') >= 3
        assert metric(server, "hazard_uploads_total", 'outcome="dropped"') == 3
        deep = httpx.get(f"{server.base_url}/health/deep", timeout=10)
        assert deep.status_code == 503
        storage = deep.json()["checks"]["storage"]
        assert storage["spool"]["ok"] is False and storage["spool"]["reason"] == "File too large", storage
        assert storage["last_disk_error"]["directory"] == "spool"
        assert list(spool.iterdir()) == []  # no temporary, no frame without its sidecar

        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (soft, hard))  # space returns
        with httpx.Client() as client:
            assert post_frame(client, server, session_id, hazard_frame(6)).status_code == 200
        wait_until(lambda: upload_statuses(server, session_id)[0]["status"] == "spooled", "new upload spooled")
        assert httpx.get(f"{server.base_url}/health/deep", timeout=10).json()["checks"]["storage"]["spool"]["ok"]
        fake_cloudinary.answer("ok")
        wait_until(lambda: upload_statuses(server, session_id)[0]["status"] == "uploaded", "spooled upload landed")
    finally:
        server.stop()


SENDERS, FRAMES_PER_SENDER = 3, 150


def test_sigkill_mid_burst_every_spooled_upload_lands_after_restart_and_nothing_stays_pending(
    redis_server: RedisProcess, fake_cloudinary: FakeCloudinary, model_cache: Path, tmp_path: Path
) -> None:
    """Cloudinary hangs: each trial call the breaker lets through holds the uploader for the timeout, so uploads
    queue up in memory while earlier ones sit in the spool. The kill comes when both are there."""
    fake_cloudinary.answer("hang")
    env = fault_server_env(
        fake_cloudinary,
        model_cache,
        tmp_path,
        BREAKER_FAIL_MAX="1",
        BREAKER_RESET_SECONDS="1",
        UPLOAD_SETTLE_SECONDS="6",
        UPLOAD_QUEUE_SIZE="256",
        SESSION_HISTORY_LIMIT=str(SENDERS * FRAMES_PER_SENDER),  # every answered frame stays in the history
    )
    first = Server(redis_server.url, tmp_path / "first", **env)
    spool = tmp_path / "spool"
    answered: list[str] = []
    stop = threading.Event()
    try:
        first.wait_ready()
        session_id = new_session(first)
        frames = [hazard_frame(seed) for seed in range(3, 7)]

        def burst() -> None:
            with httpx.Client() as client:
                number = 0
                while not stop.is_set() and number < FRAMES_PER_SENDER:
                    try:
                        response = post_frame(client, first, session_id, frames[number % len(frames)])
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        answered.append(response.json()["request_id"])
                    number += 1

        senders = [threading.Thread(target=burst) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()

        def spooled_and_queued() -> bool:
            deep = httpx.get(f"{first.base_url}/health/deep", timeout=10).json()["checks"]["storage"]
            return len(list(spool.glob("*.json"))) >= 8 and deep["queued"] >= 2

        wait_until(spooled_and_queued, "uploads both spooled and queued in memory", within=20)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        stop.set()
        for sender in senders:
            sender.join(timeout=15)
    finally:
        stop.set()
        first.stop()
    spooled = {json.loads(path.read_text())["media_id"] for path in spool.glob("*.json")}
    assert len(spooled) >= 8

    fake_cloudinary.answer("ok")
    second = Server(redis_server.url, tmp_path / "second", **env)
    try:
        second.wait_ready()
        wait_until(
            lambda: spooled <= {public_id.split("/")[1] for public_id in fake_cloudinary.assets},
            "every spooled upload landed",
            within=30,
        )
        landed_urls = {
            fake_cloudinary.asset_json(asset, False)["secure_url"]
            for public_id, asset in fake_cloudinary.assets.items()
            if public_id.split("/")[1] in spooled
        }

        def history_settled() -> bool:
            statuses = {u["status"] for u in upload_statuses(second, session_id)}
            return statuses <= SETTLED and "spooled" not in statuses

        wait_until(history_settled, "every history entry settled (none pending or still spooled)", within=20)
        uploads = upload_statuses(second, session_id)
        assert {u["request_id"] for u in uploads} >= set(answered)  # every answered frame is in history
        assert {u["url"] for u in uploads if u["status"] == "uploaded"} == landed_urls
        assert any(u["status"] == "lost" for u in uploads)  # the queued ones died with the process: said so
        assert not list(spool.iterdir())
    finally:
        second.stop()
