"""Annotated uploads of frames with hazards, off the request path.

submit (never waits; sheds when the queue is full) -> worker: one job at a time through `Delivery` (annotate ->
upload through the breaker -> record the outcome in the session; spool what cannot land now). A retry loop gives
spooled entries their next try, a housekeeping loop bounds the local store; the spool is read again at start.

A disk that refuses writes (full, read-only) is counted per directory (`UploadTally`) and shown by `check()`;
frames keep being served, and spooling resumes with the first write the disk accepts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from app.services.core.asyncio_tasks import cancel
from app.services.core.breakers import AsyncBreaker
from app.services.core.timing import ms_since
from app.services.core.types import RecordUploadUrl
from app.services.observability.metrics import Metrics
from app.services.uploads.delivery import Backoff, Delivery, UploadJob
from app.services.uploads.privacy import UploadPrivacy
from app.services.uploads.spool import Spool
from app.services.uploads.status import UploadStatus
from app.services.uploads.stores import ImageStore, image_store, write_probe
from app.services.uploads.tally import UploadTally
from app.settings import BreakerSettings, UploadSettings

log = structlog.get_logger(__name__)

RETRY_POLL_MAX_SECONDS = 1.0
SHED_LOG_INTERVAL_SECONDS = 1.0  # a flood sheds thousands: one log line per interval, with the count
HOUSEKEEPING_SECONDS = 60.0  # the local store's age bound is enforced at least this often
NOTE_AT_STOP_SECONDS = 1.0  # at shutdown, how long outcomes of spooled leftovers may take to be recorded
MB = 1024 * 1024


class UploadService:
    """The queue, the worker, the retry and housekeeping loops, and their start and stop. `settle_seconds`: how
    long after submission an upload settles at the latest (history entries say it)."""

    def __init__(
        self,
        store: ImageStore,
        breaker: AsyncBreaker,
        spool: Spool,
        tally: UploadTally,
        delivery: Delivery,
        *,
        queue_size: int,
        settle_seconds: float,
        retry_poll_seconds: float,
    ) -> None:
        self._store = store
        self.breaker = breaker
        self._spool = spool
        self._tally = tally
        self._delivery = delivery
        self.settle_seconds = settle_seconds
        self._poll_seconds = retry_poll_seconds
        self._queue: asyncio.Queue[UploadJob] = asyncio.Queue(maxsize=queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._retrier: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._retry_pass: asyncio.Task[None] | None = None
        self._current: UploadJob | None = None
        self._accepting = True
        self._sheds_not_logged = 0
        self._shed_logged_at = 0.0

    @property
    def spooled(self) -> int:
        return len(self._spool)

    def submit(self, job: UploadJob) -> bool:
        """Queue without waiting; False when the queue is full and the upload is shed."""
        if not self._accepting:
            self._shed(job)
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._shed(job)
            return False
        return True

    async def start(self) -> None:
        """Recover the spool a previous run left, bound the local store, then start the worker and the retry loop."""
        try:
            await asyncio.to_thread(self._store.keep_bounds, True)  # debris of writes a crash cut short goes too
        except OSError as exc:
            log.error("upload_storage_unavailable", store=self._store.name, error=str(exc))
        try:
            recovered = await asyncio.to_thread(self._spool.load)
        except OSError as exc:  # uploads still run; what fails now is dropped (and counted) instead of spooled
            log.error("upload_spool_unavailable", directory=str(self._spool.directory), error=str(exc))
            recovered = []
        now = time.time()
        for entry in recovered:
            entry.next_attempt_at = now  # a new process knows nothing of the store's state: try each once
        self._tally.spool_size(len(self._spool))
        if recovered:
            log.info("upload_spool_recovered", entries=len(recovered), store=self._store.name)
        self._worker = asyncio.create_task(self._run_worker(), name="upload-worker")
        self._retrier = asyncio.create_task(self._run_retries(), name="upload-retries")
        self._housekeeper = asyncio.create_task(self._run_housekeeping(), name="upload-housekeeping")

    async def stop(self, flush_seconds: float) -> None:
        """Stop taking uploads, give queued ones `flush_seconds` to land, and leave the rest in the spool."""
        if not self._accepting:
            return
        self._accepting = False
        await cancel(self._housekeeper)
        await cancel(self._retrier)  # between passes it only sleeps; a pass under way is let finish below
        await _finish(self._retry_pass, flush_seconds)
        if self._worker is not None:
            try:
                async with asyncio.timeout(flush_seconds):
                    await self._queue.join()
            except TimeoutError:
                log.warning("upload_flush_timed_out", queued=self._queue.qsize(), flush_seconds=flush_seconds)
        leftovers = [self._current] if self._current is not None else []
        await cancel(self._worker)
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
            self._queue.task_done()
        if leftovers:
            settled = await asyncio.to_thread(self._delivery.spool_leftovers, leftovers)
            for _, outcome in settled:
                self._tally.count(outcome)
            with contextlib.suppress(TimeoutError):  # best effort: Redis may be what is going away
                async with asyncio.timeout(NOTE_AT_STOP_SECONDS):
                    for entry, outcome in settled:
                        await self._delivery.note(entry, outcome)
        self._tally.spool_size(len(self._spool))
        log.info("uploads_stopped", **self.stats())

    def stats(self) -> dict[str, object]:
        return {
            "store": self._store.name,
            "breaker": self.breaker.state,
            "queued": self._queue.qsize(),
            "spooled": len(self._spool),
            "outcomes": dict(self._tally.outcomes),
            "disk_errors": dict(self._tally.disk_errors),
        }

    async def check(self) -> dict[str, object]:
        """Whether the store is reachable (Cloudinary ping) or writable (local), whether the spool's disk takes a
        write, the writes disks refused so far, and queue and spool depth; `ok` only when store and spool are."""
        report = await self._store.check()
        spool = await self._check_spool()
        return {
            **report,
            "ok": bool(report["ok"]) and bool(spool["ok"]),
            "breaker": self.breaker.state,
            "queued": self._queue.qsize(),
            "spooled": len(self._spool),
            "spool": spool,
            "disk_errors": dict(self._tally.disk_errors),
            "last_disk_error": self._tally.last_disk_error,
        }

    async def _check_spool(self) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(write_probe, self._spool.directory)
        except OSError as exc:
            self._tally.disk_failed("spool", exc)
            return {"ok": False, "reason": exc.strerror or type(exc).__name__, "latency_ms": ms_since(started)}
        return {"ok": True, "latency_ms": ms_since(started), "bytes": self._spool.stored_bytes}

    async def _run_worker(self) -> None:
        while True:
            job = await self._queue.get()
            self._current = job
            try:
                await self._delivery.deliver(job)
            except Exception:
                log.exception("upload_worker_error", session_id=job.session_id, request_id=job.request_id)
            finally:
                self._current = None
                self._queue.task_done()

    async def _run_retries(self) -> None:
        while self._accepting:
            await asyncio.sleep(self._poll_seconds)
            retry_pass = self._delivery.retry_due(lambda: self._accepting)
            self._retry_pass = asyncio.create_task(retry_pass, name="upload-retry-pass")
            try:
                await asyncio.shield(self._retry_pass)
            except Exception:
                log.exception("upload_retry_error")

    async def _run_housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await asyncio.to_thread(self._store.keep_bounds, False)
            except Exception:
                log.exception("upload_housekeeping_error")

    def _shed(self, job: UploadJob) -> None:
        self._tally.count(UploadStatus.SHED)
        self._sheds_not_logged += 1
        now = time.monotonic()
        if now - self._shed_logged_at >= SHED_LOG_INTERVAL_SECONDS:
            log.warning(
                "uploads_shed",
                shed=self._sheds_not_logged,
                queue_size=self._queue.maxsize,
                accepting=self._accepting,
                last_request_id=job.request_id,
            )
            self._sheds_not_logged, self._shed_logged_at = 0, now


async def _finish(task: asyncio.Task[None] | None, seconds: float) -> None:
    """Give a task `seconds` to end on its own (spool bookkeeping stays whole), then cancel it."""
    if task is None or task.done():
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await asyncio.shield(task)
    await cancel(task)


def create_upload_service(
    settings: UploadSettings, breakers: BreakerSettings, metrics: Metrics, record_outcome: RecordUploadUrl
) -> UploadService:
    """The configured image store behind its own breaker, the spool, and the service over them.
    `record_outcome(session_id, media id, outcome)` writes an upload's outcome where its history reads it."""
    store = image_store(
        settings.storage_dir,
        settings.cloudinary_url,
        settings.cloudinary_timeout_seconds,
        max_bytes=settings.local_storage_max_mb * MB,
        max_age_seconds=settings.local_storage_max_age_seconds,
    )
    breaker = AsyncBreaker(
        store.name,
        fail_max=breakers.fail_max,
        reset_seconds=breakers.reset_seconds,
        failures=store.failures,
        on_change=metrics.set_breaker_state,
    )
    metrics.set_breaker_state(store.name, "closed")
    tally = UploadTally(metrics)
    spool = Spool(settings.spool_dir, settings.spool_max_files, settings.spool_max_mb * MB)
    delivery = Delivery(
        store,
        breaker,
        spool,
        tally,
        record_outcome,
        backoff=Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
        # The latest an upload may still be tried and settle in time: its store call is bounded by this timeout.
        attempt_window=settings.settle_seconds - settings.cloudinary_timeout_seconds,
        privacy=UploadPrivacy(settings.privacy),
    )
    return UploadService(
        store,
        breaker,
        spool,
        tally,
        delivery,
        queue_size=settings.queue_size,
        settle_seconds=settings.settle_seconds,
        retry_poll_seconds=min(settings.retry_base_seconds, RETRY_POLL_MAX_SECONDS),
    )
