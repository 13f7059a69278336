"""The hazard registry: its engine, store, exports, the buffer that keeps sightings while the database is down,
the feed tracking reports into, and the webhook sender (stopped with the other tasks: an unsent delivery waits in
the outbox for the next start). Started after the kept Redis writes (their replay may merge into the map), stopped
after the uploads (a landed photo may still reach it), before Redis closes (the feed reads map entries)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.core.redis_client import redact_url
from app.services.registry.exports import HazardExports
from app.services.registry.feed import ReadEntry, RegistryFeed
from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.passes import PassWatcher
from app.services.registry.pending import SightingBuffer
from app.services.registry.spatial import SpatialIndex, spatial_index
from app.services.registry.store import HazardRegistry
from app.services.registry.webhook_sender import Retries, WebhookSender
from app.services.registry.webhooks import WebhookStore
from app.services.tracking.hazard_map import MapHazard
from app.services.tracking.service import TrackingService
from app.services.uploads.signing import MediaSigner
from app.settings import Settings

log = structlog.get_logger(__name__)
STOP_FLUSH_SECONDS = 5.0  # what is still queued at stop gets this long to reach the database
MAP_LIMIT_NEAR_REPORT = 100


@dataclass
class Registry:
    engine: AsyncEngine
    store: HazardRegistry
    exports: HazardExports
    buffer: SightingBuffer  # sightings the database could not take, replayed
    feed: RegistryFeed  # what tracking reports, written off the request path
    webhooks: WebhookStore  # operators' webhooks and their dead deliveries
    sender: WebhookSender  # POSTs the outbox's due deliveries
    url: str
    connect_timeout_seconds: float
    replay_seconds: float
    webhook_poll_seconds: float
    migrated: bool = False  # False until the schema is current: readiness reads it
    spatial: SpatialIndex | None = None  # postgis or lat_lon, known once migrated: readiness says which
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def health(self) -> dict[str, Any]:
        """Readiness' view: the registry being down degrades the service, it never stops detection."""
        ok = self.migrated and self.buffer.healthy
        report: dict[str, Any] = {"ok": ok, "kept": len(self.buffer), "queued": len(self.feed)}
        if self.spatial is not None:
            report["spatial_index"] = self.spatial
        if not ok:
            report["reason"] = "database unreachable" if self.migrated else "schema not migrated: database unreachable"
        return report


def build_registry(settings: Settings, media_urls: MediaSigner) -> Registry:
    """`media_urls`: webhook bodies carry the best photo at a signed URL (a receiver holds no key)."""
    r = settings.registry
    engine = open_engine(r.url, connect_timeout_s=r.connect_timeout_seconds)
    store = HazardRegistry(
        engine, passes_to_fix=r.passes_to_fix, max_page_size=r.max_page_size, max_area_km2=r.max_bbox_km2
    )
    buffer = SightingBuffer(store.apply_sighting, limit=r.buffer_limit)
    passes = PassWatcher(store, range_m=r.pass_range_m, hfov_deg=settings.tracking.assumed_hfov_deg)
    feed = RegistryFeed(buffer, passes, queue_limit=r.buffer_limit)
    retries = Retries(r.webhook_max_attempts, r.webhook_retry_base_seconds, r.webhook_retry_max_seconds)
    sender = WebhookSender(engine, retries, timeout_seconds=r.webhook_timeout_seconds, photo_url=media_urls.sign)
    return Registry(
        engine,
        store,
        HazardExports(engine, max_area_km2=r.max_bbox_km2),
        buffer,
        feed,
        WebhookStore(engine),
        sender,
        r.url,
        r.connect_timeout_seconds,
        r.replay_seconds,
        r.webhook_poll_seconds,
    )


def map_entry_reader(tracking: TrackingService, merge_meters: float) -> ReadEntry:
    """A map entry found near one of its reports (its fused position is within a few merge distances of each)."""

    async def read(map_id: str, lat: float, lon: float, tenant: str) -> MapHazard | None:
        radius_m = 4 * merge_meters + 50
        near = await tracking.map_hazards(
            bbox=None, near=f"{lat},{lon}", radius_m=radius_m, limit=MAP_LIMIT_NEAR_REPORT, tenant=tenant
        )
        return next((hazard for hazard in near if hazard.hazard_id == map_id), None)

    return read


async def start_registry(registry: Registry, read_entry: ReadEntry) -> None:
    """Migrate now if the database answers (else the upkeep task retries), then the feed and the upkeep tasks."""
    await _migrate(registry)
    registry.tasks.append(asyncio.create_task(registry.feed.run(read_entry), name="registry-feed"))
    registry.tasks.append(asyncio.create_task(_upkeep(registry), name="registry-upkeep"))
    sender = registry.sender.run_forever(registry.webhook_poll_seconds)
    registry.tasks.append(asyncio.create_task(sender, name="registry-webhooks"))


async def stop_registry(registry: Registry, read_entry: ReadEntry) -> None:
    """The tasks end, what is queued gets a last bounded try, then the engine's connections close."""
    for task in registry.tasks:
        task.cancel()
    for task in registry.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    registry.tasks.clear()
    try:
        async with asyncio.timeout(STOP_FLUSH_SECONDS):
            await registry.feed.drain(read_entry)
            await registry.feed.passes.flush()
            await registry.buffer.replay()
    except TimeoutError:
        log.warning("registry_flush_timed_out", queued=len(registry.feed), kept=len(registry.buffer))
    except Exception:
        log.exception("registry_flush_failed")
    if len(registry.buffer):  # lost with the process; the Redis map still holds them and their next report
        log.warning("registry_sightings_not_written", kept=len(registry.buffer))
    await registry.engine.dispose()


async def _migrate(registry: Registry) -> None:
    try:
        await upgrade(registry.url, connect_timeout_s=registry.connect_timeout_seconds)
        registry.spatial = await spatial_index(registry.engine)
    except Exception as exc:  # unreachable, locked, or a server that refuses: retried by the upkeep task
        log.warning("registry_migration_failed", url=redact_url(registry.url), error=repr(exc)[:300])
        return
    registry.migrated = True
    log.info("registry_migrated", url=redact_url(registry.url), spatial_index=registry.spatial)


async def _upkeep(registry: Registry) -> None:
    """Retry the migration until it is done, then replay kept sightings whenever the database answers again."""
    while not registry.migrated:
        await asyncio.sleep(registry.replay_seconds)
        await _migrate(registry)
    await registry.buffer.replay_forever(registry.replay_seconds)
