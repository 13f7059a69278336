"""JobStore's counts against a real Redis: `detections` are boxes, `hazards` distinct tracked hazards, whatever the
order in which concurrent workers track and record a job's frames, and however often one is retried."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.services.inference.types import Detection
from app.services.jobs.frames import job_frame_input
from app.services.jobs.store import JobLimits, JobStore, NewFrame
from app.services.tracking.types import TrackParams
from tests.support.redis_process import RedisProcess

FRAMES = 12
PARAMS = TrackParams(min_hits=3)
POTHOLE = Detection("pothole", 0, 0.9, 100.0, 100.0, 200.0, 160.0)
CRACK = Detection("crack", 3, 0.8, 400.0, 300.0, 520.0, 330.0)


@pytest.fixture
async def store(redis_server: RedisProcess) -> AsyncIterator[JobStore]:
    client = Redis.from_url(redis_server.url)
    yield JobStore(client, f"test-{uuid.uuid4().hex[:8]}", JobLimits(10 * 1024 * 1024, 600, 600))
    await client.aclose()


async def work(store: JobStore, job_id: str, index: int) -> None:
    """What a worker does with a done frame: take it, track its detections, record it."""
    claimed = await store.claim(job_id, index)
    assert claimed.state == "run" and claimed.meta is not None
    detections = [POTHOLE, CRACK]
    frame = job_frame_input(claimed.job_created_at, index, claimed.meta, detections, "model")
    hazards = await store.track(job_id, frame, PARAMS)
    result = {"index": index, "hazard_ids": [h.hazard_id for h in hazards]}
    await store.record(job_id, index, result, failed=False, cached=False, detections=len(detections))


async def test_concurrent_workers_count_each_hazard_once_and_every_box(store: JobStore) -> None:
    job_id = await store.create("drive", None, {})
    await store.add_frames(job_id, [NewFrame(b"jpeg", {}) for _ in range(FRAMES)])
    order = list(range(FRAMES))
    random.Random(7).shuffle(order)  # frames finish in any order (all within the tracker's time gap)
    await asyncio.gather(*(work(store, job_id, index) for index in order))
    await store.close(job_id)

    job = await store.get(job_id)
    assert job["status"] == "completed"
    assert (job["detections"], job["hazards"]) == (2 * FRAMES, 2)
    ids = {i for item in await store.results(job_id, 0, FRAMES) for i in item["hazard_ids"]}
    assert len(ids) == 2  # every frame's boxes joined the same two hazards


async def test_a_retried_frame_counts_its_boxes_and_hazards_once(store: JobStore) -> None:
    job_id = await store.create(None, None, {})
    await store.add_frames(job_id, [NewFrame(b"jpeg", {}) for _ in range(3)])
    for index in range(3):
        await work(store, job_id, index)
    frame = job_frame_input((await store.get(job_id))["created_at"], 2, {}, [POTHOLE, CRACK], "model")
    assert await store.track(job_id, frame, PARAMS) == []  # its update was applied already: nothing changes
    written, _ = await store.record(job_id, 2, {}, failed=False, cached=False, detections=2)
    assert not written
    job = await store.get(job_id)
    assert (job["detections"], job["hazards"]) == (6, 2)
