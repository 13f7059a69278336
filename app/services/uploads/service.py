"""Annotated uploads of frames with hazards, off the request path.

submit (never waits; sheds when the queue is full) -> worker: annotate in a thread -> upload through the
breaker -> record the URL in the session. What cannot land now goes to the spool on disk and is retried
with capped exponential backoff whenever the breaker lets a call through; the spool is read again at start.

Every outcome is recorded in the session under the upload's media id (see `ledger.py`), so a history entry
settles: `uploaded`, `spooled` (lands later), `dropped` or `failed`; one the process died holding reads `lost`.
A disk that refuses writes (full, read-only) is counted per directory and shown by `check()`; frames keep
being served, and spooling resumes with the first write the disk accepts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.services.core.asyncio_tasks import cancel
from app.services.core.breakers import AsyncBreaker
from app.services.core.timing import ms_since
from app.services.core.types import RecordUploadUrl
from app.services.inference.types import Detection
from app.services.observability.metrics import Metrics
from app.services.uploads.annotate import annotate
from app.services.uploads.ledger import new_media_id, outcome_value
from app.services.uploads.spool import Spool, SpoolEntry
from app.services.uploads.status import UPLOAD_OUTCOMES, UploadStatus
from app.services.uploads.stores import LocalStore, image_store, write_probe
from app.settings import BreakerSettings, UploadSettings

log = structlog.get_logger(__name__)

RETRY_POLL_MAX_SECONDS = 1.0
SHED_LOG_INTERVAL_SECONDS = 1.0  # a flood sheds thousands: one log line per interval, with the count
MAX_BACKOFF_DOUBLINGS = 30
HOUSEKEEPING_SECONDS = 60.0  # the local store's age bound is enforced at least this often
# A queued upload must settle (land, spool, or be recorded dropped) before its settle-by time: one whose upload
# attempt could run past it goes straight to the spool, leaving this much for annotating, spooling, recording.
SETTLE_MARGIN_SECONDS = 1.0
NOTE_AT_STOP_SECONDS = 1.0  # at shutdown, how long outcomes of spooled leftovers may take to be recorded
MB = 1024 * 1024


@dataclass(frozen=True)
class UploadJob:
    session_id: str
    request_id: str  # the client's: logged beside the media id, never a name or a key
    image: bytes
    detections: list[Detection]
    media_id: str = field(default_factory=new_media_id)  # server-generated: names the stored frame
    submitted_at: float = field(default_factory=time.time)

    def spool_entry(self) -> SpoolEntry:
        labels = labels_of(self.detections)
        return SpoolEntry(self.session_id, self.request_id, labels, spooled_at=time.time(), media_id=self.media_id)


@dataclass(frozen=True)
class _Try:
    url: str | None = None
    refused: bool = False  # the breaker said no: nothing was attempted


def labels_of(detections: Sequence[Detection]) -> list[str]:
    return sorted({detection.label for detection in detections})


class UploadService:
    def __init__(
        self, settings: UploadSettings, breakers: BreakerSettings, metrics: Metrics, record_outcome: RecordUploadUrl
    ) -> None:
        """`record_outcome(session_id, media id, outcome)` writes an upload's outcome where its history reads it."""
        self._store = image_store(
            settings.storage_dir,
            settings.cloudinary_url,
            settings.cloudinary_timeout_seconds,
            max_bytes=settings.local_storage_max_mb * MB,
            max_age_seconds=settings.local_storage_max_age_seconds,
        )
        self._metrics = metrics
        self._record_outcome = record_outcome
        self.settle_seconds = settings.settle_seconds
        # The latest an upload may still be tried and settle in time: its store call is bounded by this timeout.
        self._attempt_window = settings.settle_seconds - settings.cloudinary_timeout_seconds
        self.breaker = AsyncBreaker(
            self._store.name,
            fail_max=breakers.fail_max,
            reset_seconds=breakers.reset_seconds,
            failures=self._store.failures,
            on_change=metrics.set_breaker_state,
        )
        metrics.set_breaker_state(self._store.name, "closed")
        for outcome in UPLOAD_OUTCOMES:
            metrics.uploads.labels(outcome.value)  # every outcome is exported from the start, at 0
        for directory in ("spool", "storage"):
            metrics.upload_disk_errors.labels(directory)
        self._spool = Spool(settings.spool_dir, settings.spool_max_files, settings.spool_max_mb * MB)
        self._queue: asyncio.Queue[UploadJob] = asyncio.Queue(maxsize=settings.queue_size)
        self._retry_base = settings.retry_base_seconds
        self._retry_max = settings.retry_max_seconds
        self._poll_seconds = min(settings.retry_base_seconds, RETRY_POLL_MAX_SECONDS)
        self._worker: asyncio.Task[None] | None = None
        self._retrier: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._retry_pass: asyncio.Task[None] | None = None
        self._current: UploadJob | None = None
        self._accepting = True
        self._last_landed_at = 0.0
        self._sheds_not_logged = 0
        self._shed_logged_at = 0.0
        self.outcomes: Counter[str] = Counter()
        self.disk_errors: Counter[str] = Counter()  # directory ("spool", "storage") -> writes the disk refused
        self._last_disk_error: dict[str, Any] | None = None

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
        self._spool_changed()
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
            settled = await asyncio.to_thread(self._spool_leftovers, leftovers)
            for _, outcome in settled:
                self._count(outcome)
            with contextlib.suppress(TimeoutError):  # best effort: Redis may be what is going away
                async with asyncio.timeout(NOTE_AT_STOP_SECONDS):
                    for entry, outcome in settled:
                        await self._note(entry, outcome)
        self._spool_changed()
        log.info("uploads_stopped", **self.stats())

    def stats(self) -> dict[str, object]:
        return {
            "store": self._store.name,
            "breaker": self.breaker.state,
            "queued": self._queue.qsize(),
            "spooled": len(self._spool),
            "outcomes": dict(self.outcomes),
            "disk_errors": dict(self.disk_errors),
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
            "disk_errors": dict(self.disk_errors),
            "last_disk_error": self._last_disk_error,
        }

    async def _check_spool(self) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(write_probe, self._spool.directory)
        except OSError as exc:
            self._disk_failed("spool", exc)
            return {"ok": False, "reason": exc.strerror or type(exc).__name__, "latency_ms": ms_since(started)}
        return {"ok": True, "latency_ms": ms_since(started), "bytes": self._spool.stored_bytes}

    # The worker: new jobs, one at a time.

    async def _run_worker(self) -> None:
        while True:
            job = await self._queue.get()
            self._current = job
            try:
                await self._deliver(job)
            except Exception:
                log.exception("upload_worker_error", session_id=job.session_id, request_id=job.request_id)
            finally:
                self._current = None
                self._queue.task_done()

    async def _deliver(self, job: UploadJob) -> None:
        entry = job.spool_entry()
        try:
            image = await asyncio.to_thread(annotate, job.image, job.detections)
        except Exception as exc:  # Pillow raises many types for a frame it cannot read back
            self._count(UploadStatus.FAILED)
            log.warning("upload_annotate_failed", request_id=job.request_id, error=type(exc).__name__)
            await self._note(entry, UploadStatus.FAILED)
            return
        if time.time() > job.submitted_at + self._attempt_window - SETTLE_MARGIN_SECONDS:
            # It waited so long in the queue that an attempt could end past its settle-by time: spool it now.
            await self._keep(entry, image)
            return
        attempt = await self._try_upload(entry, image)
        if attempt.url is None:
            await self._keep(entry, image)
        else:
            await self._record(entry, attempt.url, spooled=False)

    # The retry loop: spooled entries whose time has come, while the breaker lets calls through.

    async def _run_retries(self) -> None:
        while self._accepting:
            await asyncio.sleep(self._poll_seconds)
            self._retry_pass = asyncio.create_task(self._retry_due(), name="upload-retry-pass")
            try:
                await asyncio.shield(self._retry_pass)
            except Exception:
                log.exception("upload_retry_error")

    async def _retry_due(self) -> None:
        for entry in self._spool.entries():
            if not self._accepting:
                return  # stopping: whatever is left stays in the spool for the next start
            if self._is_due(entry) and not await self._retry(entry):
                return  # the breaker refused: wait until it lets a trial call through

    def _is_due(self, entry: SpoolEntry) -> bool:
        # An upload that landed after this entry last failed means the store is back: skip the rest of its backoff.
        return entry.next_attempt_at <= time.time() or entry.last_attempt_at < self._last_landed_at

    async def _retry(self, entry: SpoolEntry) -> bool:
        """One more try for a spooled entry; False when the breaker refused it."""
        url = entry.url
        if url is None:
            try:
                image = await asyncio.to_thread(self._spool.read_image, entry)
            except OSError as exc:
                log.error("spool_entry_lost", request_id=entry.request_id, error=type(exc).__name__)
                await self._forget(entry)
                self._count(UploadStatus.DROPPED)
                await self._note(entry, UploadStatus.DROPPED)
                return True
            attempt = await self._try_upload(entry, image)
            if attempt.refused:
                return False
            if attempt.url is None:
                await asyncio.to_thread(self._spool.update, entry)
                return True
            url = attempt.url
        await self._record(entry, url, spooled=True)
        return True

    # Steps shared by both.

    async def _try_upload(self, entry: SpoolEntry, image: bytes) -> _Try:
        attempted = False

        async def save() -> str:
            nonlocal attempted
            attempted = True
            return await self._store.save(entry.media_id, entry.labels, image)

        try:
            url = await self.breaker.call(save)
        except Exception as exc:
            if not attempted:
                return _Try(refused=True)
            if isinstance(exc, OSError) and isinstance(self._store, LocalStore):
                self._disk_failed("storage", exc)
            self._back_off(entry)
            log.warning(
                "upload_failed",
                session_id=entry.session_id,
                request_id=entry.request_id,
                media_id=entry.media_id,
                attempts=entry.attempts,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                breaker=self.breaker.state,
            )
            return _Try()
        self._last_landed_at = time.time()
        self._count(UploadStatus.UPLOADED)
        return _Try(url=url)

    def _back_off(self, entry: SpoolEntry) -> None:
        entry.attempts += 1
        entry.last_attempt_at = now = time.time()
        delay = min(self._retry_max, self._retry_base * 2 ** min(entry.attempts - 1, MAX_BACKOFF_DOUBLINGS))
        entry.next_attempt_at = now + random.uniform(delay / 2, delay)  # jitter: spooled entries spread out

    async def _record(self, entry: SpoolEntry, url: str, *, spooled: bool) -> None:
        """Give the session its URL; while the session store is down the URL waits in the spool."""
        try:
            await self._record_outcome(entry.session_id, entry.history_key, outcome_value(UploadStatus.UPLOADED, url))
        except Exception as exc:
            entry.url = url
            self._back_off(entry)
            log.warning("upload_url_not_recorded", request_id=entry.request_id, error=type(exc).__name__)
            if spooled:
                await asyncio.to_thread(self._spool.update, entry)
            else:
                await self._keep(entry, None)
            return
        if spooled:
            await self._forget(entry)
        log.info(
            "upload_landed", session_id=entry.session_id, request_id=entry.request_id, media_id=entry.media_id, url=url
        )

    async def _keep(self, entry: SpoolEntry, image: bytes | None) -> None:
        """Spool an entry: its frame, or (`image` None) only the URL that still has to be recorded."""
        try:
            kept = await asyncio.to_thread(self._spool.put, entry, image)
            reason = "spool full"
        except OSError as exc:
            kept, reason = False, exc.strerror or type(exc).__name__
            self._disk_failed("spool", exc)
        self._spool_changed()
        if not kept:
            log.error("upload_dropped", request_id=entry.request_id, reason=reason, spooled=len(self._spool))
        if image is not None:
            outcome = UploadStatus.SPOOLED if kept else UploadStatus.DROPPED
            self._count(outcome)
            await self._note(entry, outcome)

    async def _note(self, entry: SpoolEntry, outcome: UploadStatus) -> None:
        """Record an outcome short of `uploaded` where the history reads it; best effort (Redis may be down)."""
        try:
            await self._record_outcome(entry.session_id, entry.history_key, outcome_value(outcome))
        except Exception as exc:
            log.warning(
                "upload_outcome_not_recorded",
                request_id=entry.request_id,
                outcome=outcome.value,
                error=type(exc).__name__,
            )

    def _disk_failed(self, directory: str, exc: OSError) -> None:
        self.disk_errors[directory] += 1
        self._metrics.upload_disk_errors.labels(directory).inc()
        reason = exc.strerror or type(exc).__name__
        self._last_disk_error = {"directory": directory, "reason": reason, "at": time.time()}

    async def _run_housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await asyncio.to_thread(self._store.keep_bounds, False)
            except Exception:
                log.exception("upload_housekeeping_error")

    async def _forget(self, entry: SpoolEntry) -> None:
        await asyncio.to_thread(self._spool.remove, entry)
        self._spool_changed()

    def _spool_leftovers(self, jobs: list[UploadJob]) -> list[tuple[SpoolEntry, UploadStatus]]:
        """At shutdown, in a thread: annotate and spool what never got its turn."""
        outcomes = []
        for job in jobs:
            entry = job.spool_entry()
            try:
                image = annotate(job.image, job.detections)
                kept = self._spool.put(entry, image)
                outcomes.append((entry, UploadStatus.SPOOLED if kept else UploadStatus.DROPPED))
            except OSError as exc:  # the disk refused it
                self._disk_failed("spool", exc)
                log.error("upload_lost_at_shutdown", request_id=job.request_id, error=exc.strerror)
                outcomes.append((entry, UploadStatus.DROPPED))
            except Exception as exc:
                log.error("upload_lost_at_shutdown", request_id=job.request_id, error=type(exc).__name__)
                outcomes.append((entry, UploadStatus.FAILED))
        return outcomes

    def _shed(self, job: UploadJob) -> None:
        self._count(UploadStatus.SHED)
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

    def _count(self, outcome: UploadStatus) -> None:
        self.outcomes[outcome.value] += 1
        self._metrics.uploads.labels(outcome.value).inc()

    def _spool_changed(self) -> None:
        self._metrics.upload_spool.set(len(self._spool))


async def _finish(task: asyncio.Task[None] | None, seconds: float) -> None:
    """Give a task `seconds` to end on its own (spool bookkeeping stays whole), then cancel it."""
    if task is None or task.done():
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await asyncio.shield(task)
    await cancel(task)
