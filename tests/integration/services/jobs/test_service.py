"""JobService (app/services/jobs/service.py) against a real Redis: what the jobs API documents it refuses (an
unknown session, an id of no job, ingestion off, a path outside INGEST_ROOT, too many files), and what it queues."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import IngestDisabled, IngestRefused, JobNotFound, SessionNotFound
from app.services.core.redis_client import REDIS_FAILURES
from app.services.inference.types import DetectOptions
from app.services.jobs.queue import FrameQueue, QueueLimits
from app.services.jobs.service import BatchOptions, IngestLimits, JobService
from app.services.jobs.store import JobLimits, JobStore, NewFrame
from app.services.observability.metrics import Metrics
from app.services.sessions.admission import CreationBudget, CreationLimits, FrameRateLimit
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.store import SessionLimits, SessionStore
from app.services.sessions.write_behind import PendingWrites
from tests.support.images import scene_with_hazards
from tests.support.redis_process import RedisProcess

MAX_FILES = 3
_, FRAME = scene_with_hazards(seed=11, size=(320, 180))
OPTIONS = BatchOptions(DetectOptions(), None)


def job_service(redis: Redis, fleet: str, ingest_root: Path | None) -> JobService:
    breaker = AsyncBreaker("redis", fail_max=5, reset_seconds=1, failures=REDIS_FAILURES)
    calls = GuardedRedis(redis, breaker)
    limits = SessionLimits(
        default_ttl=60, max_ttl=3600, ended_grace=60, history_limit=10, frame_rate=FrameRateLimit(100, 100)
    )
    sessions = SessionStore(calls, limits, CreationBudget(calls, CreationLimits()), PendingWrites(100), fail_open=False)
    return JobService(
        JobStore(redis, fleet, JobLimits(10 * 1024 * 1024, 600, 600)),
        FrameQueue(redis, fleet, QueueLimits(30, 1, 5, 60)),
        sessions,
        Metrics(),
        IngestLimits(ingest_root, MAX_FILES, chunk_frames=2, wait_seconds=0),
    )


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def ingest_root(tmp_path: Path) -> Path:
    root = tmp_path / "ingest"
    (root / "drive" / "part-2").mkdir(parents=True)
    (root / "drive" / "a.jpg").write_bytes(FRAME)
    (root / "drive" / "notes.txt").write_text("not a frame")
    (root / "drive" / "part-2" / "b.JPG").write_bytes(FRAME)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(FRAME)
    (root / "drive" / "escape.jpg").symlink_to(outside / "secret.jpg")  # a link out of the root is skipped
    (root / "linked-out").symlink_to(outside)
    for index in range(MAX_FILES + 1):
        (root / "too-many").mkdir(exist_ok=True)
        (root / "too-many" / f"{index}.png").write_bytes(FRAME)
    return root


@pytest.fixture
def service(redis_client: Redis, ingest_root: Path) -> JobService:
    return job_service(redis_client, f"test-{uuid.uuid4().hex[:8]}", ingest_root)


async def test_a_job_for_an_unknown_session_is_refused_before_anything_is_written(service: JobService) -> None:
    with pytest.raises(SessionNotFound):
        await service.create("drive", "no-such-session", OPTIONS)
    assert await service.recent(10) == []


async def test_an_id_of_no_job_is_not_found_before_redis_is_asked(service: JobService) -> None:
    for malformed in ("../../etc", "x" * 200, "job:0"):
        for read in (service.status, service.close, service.cancel):
            with pytest.raises(JobNotFound):
                await read(malformed)
        with pytest.raises(JobNotFound):
            await service.ingest_dir(malformed, "drive")
    with pytest.raises(JobNotFound):
        await service.status("A" * 22)  # the issued shape, but never issued


@pytest.mark.parametrize("path", ["..", "../outside", "/etc", "linked-out", "drive/a.jpg", "missing", "too-many"])
async def test_ingestion_refuses_what_is_not_a_directory_of_few_enough_files_below_the_root(
    service: JobService, path: str
) -> None:
    job_id = (await service.create("drive", None, OPTIONS))["job_id"]
    with pytest.raises(IngestRefused):
        await service.ingest_dir(job_id, path)
    assert (await service.status(job_id))["total"] == 0


async def test_ingestion_is_refused_when_no_root_is_set(redis_client: Redis) -> None:
    service = job_service(redis_client, f"test-{uuid.uuid4().hex[:8]}", None)
    job_id = (await service.create("drive", None, OPTIONS))["job_id"]
    with pytest.raises(IngestDisabled):
        await service.ingest_dir(job_id, "drive")


async def test_ingestion_queues_every_image_below_the_path_in_order(service: JobService) -> None:
    job_id = (await service.create("drive", None, OPTIONS))["job_id"]
    accepted = await service.ingest_dir(job_id, "drive")
    assert len(accepted) == 2  # a.jpg and part-2/b.JPG; not the text file, not the link out of the root
    status = await service.status(job_id)
    assert status["total"] == 2 and status["status"] != "completed"
    assert (await service.queue_depth())["batch"] == 2
    assert [job["job_id"] for job in await service.recent(10)] == [job_id]


async def test_another_tenants_job_is_unknown_to_every_call_and_listed_only_for_its_own(service: JobService) -> None:
    job_id = (await service.create("drive", None, OPTIONS, tenant="fleet-a"))["job_id"]
    frame = NewFrame(FRAME, {"filename": "a.jpg"})
    for call in (
        service.status(job_id, "fleet-b"),
        service.results(job_id, 0, 10, "fleet-b"),
        service.add_frames(job_id, [frame], "fleet-b"),
        service.close(job_id, "fleet-b"),
        service.cancel(job_id, "fleet-b"),
    ):
        with pytest.raises(JobNotFound) as refused:
            await call
        assert refused.value.details == {"job_id": job_id}
    job = await service.status(job_id, "fleet-a")
    assert (job["status"], job["closed"], job["total"]) == ("open", False, 0)  # untouched
    assert [j["job_id"] for j in await service.recent(10, "fleet-a")] == [job_id]
    assert await service.recent(10, "fleet-b") == []
    assert [j["job_id"] for j in await service.recent(10)] == [job_id]  # None: every tenant's
    assert (await service.cancel(job_id, "fleet-a"))["status"] == "cancelled"
