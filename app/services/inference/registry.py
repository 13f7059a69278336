"""The model repository and hot-swap: versions, their states, which one is active.

Every sub-folder of the repository that holds an Ultralytics OpenVINO export (`<stem>.xml`, `<stem>.bin`,
`metadata.yaml`) is a version, named by its folder. Each version moves through
`unloaded -> loading -> available -> unloading -> unloaded`, or ends `failed` with the reason (OVMS-like).
Exactly one available version is active. Activation loads, warms and checks the new version before one
assignment switches to it (Triton semantics): frames hold the engine they were admitted with, so they finish
on it, and the old engine is released once its pool has drained (bounded). A failed load never touches the
active version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from app.services.core.errors import ModelActive, ModelMemoryLimit, ModelNotFound, ModelNotLoaded, ModelNotReady
from app.services.inference.types import ModelLoadError
from app.services.observability.memory import MIB, rss_mb

if TYPE_CHECKING:  # the engine imports OpenVINO; the registry itself only hands engines around
    from app.services.inference.engine import DetectionEngine

log = structlog.get_logger(__name__)

DRAIN_POLL_SECONDS = 0.01
# Loaded size per weight byte, measured on the bundled versions (FP16: 6 MB of weights -> ~68 MiB RSS;
# INT8: 3 MB -> ~31 MiB, compiled for CPU, pool included): a deliberately high rough estimate.
RSS_PER_WEIGHT_BYTE = 8
RSS_PER_MODEL_BASE_MB = 16

BuildEngine = Callable[[Path, str], "DetectionEngine"]  # (folder, version name) -> compiled engine; blocking
VerifyEngine = Callable[["DetectionEngine"], Awaitable[None]]  # warm-up + probe; raises ModelLoadError


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    AVAILABLE = "available"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass
class ModelVersion:
    name: str
    path: Path
    state: ModelState = ModelState.UNLOADED
    reason: str | None = None
    engine: DetectionEngine | None = None
    load_seconds: float | None = None
    loaded_mb: float | None = None  # RSS growth measured while it loaded
    changed_at: float = 0.0

    @property
    def estimated_mb(self) -> float:
        weights = sum(path.stat().st_size for path in _glob(self.path, "*.bin"))
        return round(weights * RSS_PER_WEIGHT_BYTE / MIB + RSS_PER_MODEL_BASE_MB, 1)

    def describe(self, active: str | None) -> dict[str, Any]:
        info = self.engine.info if self.engine is not None else None
        return {
            "name": self.name,
            "state": self.state.value,
            "active": self.name == active,
            "reason": self.reason,
            "version": info.version if info else None,
            "input_size": f"{info.input_width}x{info.input_height}" if info else None,
            "load_seconds": self.load_seconds,
            "compile_seconds": self.engine.compile_seconds if self.engine is not None else None,
            "loaded_mb": self.loaded_mb,
            "estimated_mb": self.estimated_mb,
            "pool": self.engine.stats().__dict__ if self.engine is not None else None,
        }


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file() and any(path.glob("*.xml"))


class ModelRegistry:
    def __init__(
        self,
        repository: Path,
        default_path: Path,
        build_engine: BuildEngine,
        verify_engine: VerifyEngine,
        *,
        memory_limit_mb: float,
        drain_seconds: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.repository = repository
        # The version a fleet starts with is always a version, even outside the repository or broken
        # (loading it then fails with a reason that names the missing file).
        self._default_path = default_path
        self.default_version = default_path.name
        self._build_engine = build_engine
        self._verify_engine = verify_engine
        self.memory_limit_mb = memory_limit_mb
        self._drain_seconds = drain_seconds
        self._versions: dict[str, ModelVersion] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._switch = asyncio.Lock()  # one activation at a time
        self.active: str | None = None
        self.on_change: Callable[[], None] = on_change or (lambda: None)  # a version changed state: metrics

    # Reading: the hot path calls these, so they are plain attribute reads.

    def engine_for(self, name: str | None) -> DetectionEngine:
        """The engine a frame runs on: the active one, or a loaded version it asked for by name."""
        if name is None or name == self.active:
            version = self._versions.get(self.active) if self.active else None
            if version is None or version.engine is None:
                raise ModelNotReady(retry_after=1)  # warming after a start or restart: a client retries
            return version.engine
        version = self._versions.get(name)
        if version is None:
            self.discover()  # a folder copied in since the last scan is still found
            version = self._versions.get(name)
        if version is None:
            raise ModelNotFound(details={"model": name})
        if version.engine is None or version.state is not ModelState.AVAILABLE:
            raise ModelNotLoaded(details={"model": name, "state": version.state.value})
        return version.engine

    @property
    def active_engine(self) -> DetectionEngine | None:
        version = self._versions.get(self.active) if self.active else None
        return version.engine if version is not None else None

    def describe(self) -> list[dict[str, Any]]:
        self.discover()
        return [version.describe(self.active) for version in sorted(self._versions.values(), key=lambda v: v.name)]

    def version(self, name: str) -> ModelVersion:
        self.discover()
        version = self._versions.get(name)
        if version is None:
            raise ModelNotFound(details={"model": name})
        return version

    def loaded(self) -> list[str]:
        return sorted(name for name, v in self._versions.items() if v.state is ModelState.AVAILABLE)

    def discover(self) -> None:
        """Pick up version folders added to the repository; forget unloaded ones whose folder is gone."""
        found = {path.name: path for path in _children(self.repository) if is_model_folder(path)}
        found.setdefault(self.default_version, self._default_path)
        for name, path in found.items():
            self._versions.setdefault(name, ModelVersion(name, path))
        for name in [n for n, v in self._versions.items() if n not in found and v.engine is None]:
            del self._versions[name]

    # Changing: each version changes under its own lock, so a load and an unload of it never interleave.

    async def load(self, name: str) -> ModelVersion:
        version = self.version(name)
        async with self._lock(name):
            if version.state is ModelState.AVAILABLE:
                return version
            estimate = version.estimated_mb
            if rss_mb() + estimate > self.memory_limit_mb:
                self._set(version, ModelState.FAILED, reason=f"would exceed MODEL_MEMORY_LIMIT_MB ({estimate} MiB)")
                raise ModelMemoryLimit(
                    details={
                        "model": name,
                        "estimated_mb": estimate,
                        "rss_mb": round(rss_mb(), 1),
                        "limit_mb": self.memory_limit_mb,
                    }
                )
            self._set(version, ModelState.LOADING)
            try:
                version.engine = await self._build_and_verify(version)
            except ModelLoadError as exc:
                version.engine = None
                self._set(version, ModelState.FAILED, reason=str(exc))
                log.error("model_load_failed", model=name, reason=str(exc))
                raise
            self._set(version, ModelState.AVAILABLE)
            return version

    async def _build_and_verify(self, version: ModelVersion) -> DetectionEngine:
        started, rss_before = time.perf_counter(), rss_mb()
        engine = await asyncio.to_thread(self._build_engine, version.path, version.name)
        await self._verify_engine(engine)
        version.load_seconds = round(time.perf_counter() - started, 3)
        version.loaded_mb = round(max(0.0, rss_mb() - rss_before), 1)
        log.info(
            "model_loaded",
            model=version.name,
            version=engine.info.version,
            load_seconds=version.load_seconds,
            loaded_mb=version.loaded_mb,
        )
        return engine

    async def activate(self, name: str) -> ModelVersion:
        """Load (if needed), then switch; the previous active version is drained and unloaded."""
        async with self._switch:
            version = await self.load(name)
            previous = self.active
            self.active = name  # the switch: frames admitted from now on get this engine
            self.on_change()
            log.info("model_activated", model=name, previous=previous)
        if previous is not None and previous != name:
            await self.unload(previous)
        return version

    async def unload(self, name: str) -> ModelVersion:
        version = self.version(name)
        if name == self.active:
            raise ModelActive(details={"model": name})
        async with self._lock(name):
            engine = version.engine
            if engine is None:
                if version.state is ModelState.FAILED:
                    self._set(version, ModelState.UNLOADED)
                return version
            self._set(version, ModelState.UNLOADING)
            if not await _drain(engine, self._drain_seconds):
                log.warning("model_drain_timed_out", model=name, pool=engine.stats().__dict__)
            version.engine = None  # frames still holding it keep it alive; it is freed when they finish
            version.loaded_mb = None
            self._set(version, ModelState.UNLOADED)
            return version

    async def reload(self, name: str) -> ModelVersion:
        """Re-read a version from disk: the fresh engine replaces the old one atomically, then the old drains."""
        version = self.version(name)
        if version.engine is None:
            return await self.load(name)
        async with self._lock(name):
            old = version.engine
            version.engine = await self._build_and_verify(version)  # a failure leaves the old engine serving
            self.on_change()
        if old is not None:
            await _drain(old, self._drain_seconds)
        return version

    def release_all(self) -> None:
        """At shutdown, once the frames have drained: every engine let go."""
        for version in self._versions.values():
            version.engine = None
            version.state = ModelState.UNLOADED
        self.active = None

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _set(self, version: ModelVersion, state: ModelState, reason: str | None = None) -> None:
        version.state, version.reason, version.changed_at = state, reason, time.time()
        self.on_change()


async def _drain(engine: DetectionEngine, seconds: float) -> bool:
    """Wait until no frame is inside the engine (decoding, queued or inferring); False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.queued == 0 and stats.in_flight == 0:
            return True
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return False


def _glob(path: Path, pattern: str) -> list[Path]:
    try:
        return list(path.glob(pattern))
    except OSError:
        return []


def _children(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []
