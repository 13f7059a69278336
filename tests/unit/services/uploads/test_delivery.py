"""One upload's way to the local image store, without Redis: it lands and its URL is recorded; a URL the session
store cannot take waits in the spool; a frame that cannot be annotated is recorded failed; retries back off."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from app.services.core.breakers import AsyncBreaker
from app.services.inference.types import Detection
from app.services.observability.metrics import Metrics
from app.services.uploads.delivery import Backoff, Delivery, UploadJob
from app.services.uploads.spool import Spool, SpoolEntry
from app.services.uploads.stores import LocalStore
from app.services.uploads.tally import UploadTally
from tests.support.images import scene_with_hazards


class Ledger:
    """The session's uploads ledger as a dict; `down` makes it refuse like a session store that is unreachable."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, str]] = {}
        self.down = False

    async def record(self, session_id: str, media_id: str, outcome: str) -> None:
        if self.down:
            raise ConnectionError("session store down")
        self.outcomes[media_id] = json.loads(outcome)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def tally() -> UploadTally:
    return UploadTally(Metrics())


def delivery(tmp_path: Path, ledger: Ledger, tally: UploadTally) -> tuple[Delivery, Spool]:
    store = LocalStore(tmp_path / "media")
    breaker = AsyncBreaker(store.name, fail_max=3, reset_seconds=60, failures=store.failures)
    spool = Spool(tmp_path / "spool", max_files=10)
    backoff = Backoff(base_seconds=1.0, max_seconds=8.0)
    return Delivery(store, breaker, spool, tally, ledger.record, backoff=backoff, attempt_window=30.0), spool


def hazard_job(image: bytes | None = None) -> UploadJob:
    scene, jpeg = scene_with_hazards(seed=3, size=(320, 180))
    detections = [Detection(hazard.label, hazard.class_id, 0.9, *hazard.box) for hazard in scene.hazards]
    return UploadJob("session-1", "request-1", jpeg if image is None else image, detections)


async def test_a_frame_lands_and_its_url_is_recorded(tmp_path: Path, ledger: Ledger, tally: UploadTally) -> None:
    uploads, spool = delivery(tmp_path, ledger, tally)
    job = hazard_job()
    await uploads.deliver(job)
    assert ledger.outcomes[job.media_id]["status"] == "uploaded"
    assert (tmp_path / "media" / f"{job.media_id}.jpg").exists()
    assert tally.outcomes == {"uploaded": 1} and len(spool) == 0


async def test_a_url_the_session_store_cannot_take_waits_in_the_spool_then_is_recorded(
    tmp_path: Path, ledger: Ledger, tally: UploadTally
) -> None:
    uploads, spool = delivery(tmp_path, ledger, tally)
    job = hazard_job()
    ledger.down = True
    await uploads.deliver(job)
    [kept] = spool.entries()
    assert kept.url is not None and kept.attempts == 1 and job.media_id not in ledger.outcomes
    ledger.down = False
    kept.next_attempt_at = 0.0  # its backoff is over
    await uploads.retry_due(lambda: True)
    assert ledger.outcomes[job.media_id] == {"status": "uploaded", "url": kept.url}
    assert len(spool) == 0


async def test_a_frame_that_cannot_be_annotated_is_recorded_failed(
    tmp_path: Path, ledger: Ledger, tally: UploadTally
) -> None:
    uploads, spool = delivery(tmp_path, ledger, tally)
    job = hazard_job(image=b"not a jpeg")
    await uploads.deliver(job)
    assert ledger.outcomes[job.media_id] == {"status": "failed"}
    assert tally.outcomes == {"failed": 1} and len(spool) == 0


async def test_retries_stop_as_soon_as_the_service_stops(tmp_path: Path, ledger: Ledger, tally: UploadTally) -> None:
    uploads, spool = delivery(tmp_path, ledger, tally)
    ledger.down = True
    await uploads.deliver(hazard_job())
    ledger.down = False
    spool.entries()[0].next_attempt_at = 0.0
    await uploads.retry_due(lambda: False)
    assert len(spool) == 1


def test_backoff_doubles_per_failure_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(base_seconds=1.0, max_seconds=8.0)
    entry = SpoolEntry("session-1", "request-1", ["pothole"], spooled_at=time.time())
    for attempts, delay in enumerate([1.0, 2.0, 4.0, 8.0, 8.0], start=1):
        backoff.after_failure(entry)
        waits = entry.next_attempt_at - entry.last_attempt_at
        assert entry.attempts == attempts and delay / 2 <= waits <= delay
