"""Where a live frame's inference runs (app/services/detection/detectors.py): LocalDetector on this process's
registry of real engines, RemoteDetector through the real queue in Redis."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.services.core.errors import DeadlineExceeded, ModelNotFound, ModelNotLoaded, ModelNotReady, QueueUnavailable
from app.services.detection.detectors import LocalDetector, RemoteDetector
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import DetectOptions, Priority
from app.services.jobs.queue import FrameQueue, QueueLimits
from tests.support.images import scene_with_hazards
from tests.support.models import DEFAULT_VERSION, OTHER_VERSION, real_registry
from tests.support.redis_process import RedisProcess

_, FRAME = scene_with_hazards(seed=5, size=(640, 360))


@pytest.fixture
async def registry(model_cache: Path) -> AsyncIterator[ModelRegistry]:
    registry = real_registry(model_cache)
    await registry.activate(DEFAULT_VERSION)
    yield registry
    registry.release_all()


async def test_a_local_frame_runs_on_the_active_version(registry: ModelRegistry) -> None:
    call = LocalDetector(registry, None, Priority.INTERACTIVE).bind(None)
    assert call.label == DEFAULT_VERSION
    result, model = await call.detect(FRAME, DetectOptions(), time.monotonic() + 30)
    assert model.name == DEFAULT_VERSION and result.detections


async def test_a_local_frame_bound_before_a_swap_finishes_on_its_version(registry: ModelRegistry) -> None:
    call = LocalDetector(registry, None, Priority.INTERACTIVE).bind(None)
    await registry.activate(OTHER_VERSION)
    _, model = await call.detect(FRAME, DetectOptions(), time.monotonic() + 30)
    assert model.name == DEFAULT_VERSION  # chosen at admission: the swap did not move it
    assert LocalDetector(registry, None, Priority.INTERACTIVE).bind(None).label == OTHER_VERSION


async def test_local_binding_refuses_at_once_what_nothing_can_serve(registry: ModelRegistry, model_cache: Path) -> None:
    detector = LocalDetector(registry, None, Priority.INTERACTIVE)
    with pytest.raises(ModelNotFound):
        detector.bind("no-such-version")
    with pytest.raises(ModelNotLoaded):
        detector.bind(OTHER_VERSION)  # a version of the repository, not loaded
    with pytest.raises(ModelNotReady):
        LocalDetector(real_registry(model_cache), None, Priority.INTERACTIVE).bind(None)  # nothing active yet


async def test_a_remote_frame_no_worker_takes_is_refused_at_its_deadline(redis_server: RedisProcess) -> None:
    redis = Redis.from_url(redis_server.url)
    queue = FrameQueue(redis, f"test-{uuid.uuid4().hex[:8]}", QueueLimits(30, 1, 5, 60))
    try:
        call = RemoteDetector(queue).bind(OTHER_VERSION)
        assert call.label == "remote"
        call.refuse_if_busy(time.monotonic())  # the workers' engines are elsewhere: nothing to refuse here
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await call.detect(FRAME, DetectOptions(), started + 0.5)
        assert 0.5 <= time.monotonic() - started < 5
        assert (await queue.depth())["live"] == 1  # it was sent, for a worker to take
    finally:
        await redis.aclose()


async def test_a_remote_frame_is_refused_with_retry_after_while_the_queue_is_frozen_or_down(tmp_path: Path) -> None:
    """The queue's Redis frozen (SIGSTOP) then gone: 503 QUEUE_UNAVAILABLE with Retry-After, by the frame's deadline
    and a little, not a 500 (seen in the rehearsal) nor a 504 that blames the workers."""
    server = RedisProcess(tmp_path / "queue")
    server.start()
    assert server.process is not None
    redis = Redis.from_url(server.url, socket_timeout=10)  # longer than any frame: the deadline must bound it
    queue = FrameQueue(redis, f"test-{uuid.uuid4().hex[:8]}", QueueLimits(30, 1, 5, 60))
    call = RemoteDetector(queue).bind(None)
    try:
        await queue.depth()  # connected before the freeze
        server.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as frozen:
            await call.detect(FRAME, DetectOptions(), started + 0.5)
        assert frozen.value.retry_after == 1 and time.monotonic() - started < 2
        server.process.send_signal(signal.SIGCONT)
        server.kill()
        with pytest.raises(QueueUnavailable) as down:
            await call.detect(FRAME, DetectOptions(), time.monotonic() + 0.5)
        assert down.value.retry_after == 1
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()
        await redis.aclose()
