"""One upload's way to the image store: annotate -> upload through the breaker -> record its outcome in the session.

What cannot land now goes to the spool on disk and is retried with capped exponential backoff whenever the breaker
lets a call through. Every outcome is recorded in the session under the upload's media id (see `ledger.py`), so a
history entry settles: `uploaded`, `spooled` (lands later), `dropped` or `failed`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from app.services.core.breakers import AsyncBreaker
from app.services.core.types import RecordUploadUrl
from app.services.inference.types import Detection
from app.services.uploads.annotate import annotate
from app.services.uploads.ledger import new_media_id, outcome_value
from app.services.uploads.privacy import UploadPrivacy
from app.services.uploads.spool import Spool, SpoolEntry
from app.services.uploads.status import UploadStatus
from app.services.uploads.stores import ImageStore, LocalStore
from app.services.uploads.tally import UploadTally

log = structlog.get_logger(__name__)

MAX_BACKOFF_DOUBLINGS = 30
# A queued upload must settle (land, spool, or be recorded dropped) before its settle-by time: one whose upload
# attempt could run past it goes straight to the spool, leaving this much for annotating, spooling, recording.
SETTLE_MARGIN_SECONDS = 1.0


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


def labels_of(detections: Sequence[Detection]) -> list[str]:
    return sorted({detection.label for detection in detections})


@dataclass(frozen=True)
class Backoff:
    """Spooled retries wait `base_seconds` doubling per failed attempt, at most `max_seconds`, jittered."""

    base_seconds: float
    max_seconds: float

    def after_failure(self, entry: SpoolEntry) -> None:
        entry.attempts += 1
        entry.last_attempt_at = now = time.time()
        delay = min(self.max_seconds, self.base_seconds * 2 ** min(entry.attempts - 1, MAX_BACKOFF_DOUBLINGS))
        entry.next_attempt_at = now + random.uniform(delay / 2, delay)  # jitter: spooled entries spread out


@dataclass(frozen=True)
class _Try:
    url: str | None = None
    refused: bool = False  # the breaker said no: nothing was attempted


class Delivery:
    """`record_outcome(session_id, media id, outcome)` writes an upload's outcome where its history reads it.
    `attempt_window`: the latest after submission an upload may still be tried and settle in time.
    `privacy`: what of a frame is kept sharp before it is spooled or stored (see `privacy.py`)."""

    def __init__(
        self,
        store: ImageStore,
        breaker: AsyncBreaker,
        spool: Spool,
        tally: UploadTally,
        record_outcome: RecordUploadUrl,
        *,
        backoff: Backoff,
        attempt_window: float,
        privacy: UploadPrivacy = UploadPrivacy.FULL,
    ) -> None:
        self._store = store
        self._breaker = breaker
        self._spool = spool
        self._tally = tally
        self._record_outcome = record_outcome
        self._backoff = backoff
        self._attempt_window = attempt_window
        self._privacy = privacy
        self._last_landed_at = 0.0

    async def deliver(self, job: UploadJob) -> None:
        """A new job: annotate it, then upload it, or spool it when it cannot land now."""
        entry = job.spool_entry()
        try:
            image = await asyncio.to_thread(annotate, job.image, job.detections, self._privacy)
        except Exception as exc:  # Pillow raises many types for a frame it cannot read back
            self._tally.count(UploadStatus.FAILED)
            log.warning("upload_annotate_failed", request_id=job.request_id, error=type(exc).__name__)
            await self.note(entry, UploadStatus.FAILED)
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

    async def retry_due(self, keep_going: Callable[[], bool]) -> None:
        """Spooled entries whose time has come, while the breaker lets calls through and `keep_going()` holds."""
        for entry in self._spool.entries():
            if not keep_going():
                return  # stopping: whatever is left stays in the spool for the next start
            if self._is_due(entry) and not await self._retry(entry):
                return  # the breaker refused: wait until it lets a trial call through

    def spool_leftovers(self, jobs: list[UploadJob]) -> list[tuple[SpoolEntry, UploadStatus]]:
        """At shutdown, in a thread: annotate and spool what never got its turn."""
        outcomes = []
        for job in jobs:
            entry = job.spool_entry()
            try:
                image = annotate(job.image, job.detections, self._privacy)
                kept = self._spool.put(entry, image)
                outcomes.append((entry, UploadStatus.SPOOLED if kept else UploadStatus.DROPPED))
            except OSError as exc:  # the disk refused it
                self._tally.disk_failed("spool", exc)
                log.error("upload_lost_at_shutdown", request_id=job.request_id, error=exc.strerror)
                outcomes.append((entry, UploadStatus.DROPPED))
            except Exception as exc:
                log.error("upload_lost_at_shutdown", request_id=job.request_id, error=type(exc).__name__)
                outcomes.append((entry, UploadStatus.FAILED))
        return outcomes

    async def note(self, entry: SpoolEntry, outcome: UploadStatus) -> None:
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
                self._tally.count(UploadStatus.DROPPED)
                await self.note(entry, UploadStatus.DROPPED)
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

    async def _try_upload(self, entry: SpoolEntry, image: bytes) -> _Try:
        attempted = False

        async def save() -> str:
            nonlocal attempted
            attempted = True
            return await self._store.save(entry.media_id, entry.labels, image)

        try:
            url = await self._breaker.call(save)
        except Exception as exc:
            if not attempted:
                return _Try(refused=True)
            if isinstance(exc, OSError) and isinstance(self._store, LocalStore):
                self._tally.disk_failed("storage", exc)
            self._backoff.after_failure(entry)
            log.warning(
                "upload_failed",
                session_id=entry.session_id,
                request_id=entry.request_id,
                media_id=entry.media_id,
                attempts=entry.attempts,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                breaker=self._breaker.state,
            )
            return _Try()
        self._last_landed_at = time.time()
        self._tally.count(UploadStatus.UPLOADED)
        return _Try(url=url)

    async def _record(self, entry: SpoolEntry, url: str, *, spooled: bool) -> None:
        """Give the session its URL; while the session store is down the URL waits in the spool."""
        try:
            await self._record_outcome(entry.session_id, entry.history_key, outcome_value(UploadStatus.UPLOADED, url))
        except Exception as exc:
            entry.url = url
            self._backoff.after_failure(entry)
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
            self._tally.disk_failed("spool", exc)
        self._tally.spool_size(len(self._spool))
        if not kept:
            log.error("upload_dropped", request_id=entry.request_id, reason=reason, spooled=len(self._spool))
        if image is not None:
            outcome = UploadStatus.SPOOLED if kept else UploadStatus.DROPPED
            self._tally.count(outcome)
            await self.note(entry, outcome)

    async def _forget(self, entry: SpoolEntry) -> None:
        await asyncio.to_thread(self._spool.remove, entry)
        self._tally.spool_size(len(self._spool))
