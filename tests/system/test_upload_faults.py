"""Upload faults in a real server process: a full spool disk keeps detection answering, counts and shows it, and
resumes when space returns; a SIGKILL mid-burst loses no spooled upload and leaves none pending."""

from __future__ import annotations

import json
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

from tests.support.fake_cloudinary import FakeCloudinary
from tests.support.redis_process import RedisProcess
from tests.support.server import Server
from tests.support.uploads import hazard_frame

SETTLED = {"uploaded", "spooled", "dropped", "failed", "shed", "skipped", "none", "lost"}


@pytest.fixture
def fake_cloudinary() -> Iterator[FakeCloudinary]:
    fake = FakeCloudinary()
    fake.answer("ok")
    yield fake
    fake.stop()


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
