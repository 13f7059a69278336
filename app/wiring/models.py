"""The model registry and what it needs: engines built from a version's files, proven before they serve, and
every change of state published to the metrics."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from app.services.core.serving import Phase, ServingState
from app.services.detection.detectors import EngineCall
from app.services.inference.probe import Probe
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import ModelLoadError, Priority
from app.services.observability.metrics import Metrics
from app.settings import Settings
from app.wiring.process import Role

if TYPE_CHECKING:  # the engine imports OpenVINO, which only a process that holds a model loads
    from app.services.inference.engine import DetectionEngine

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Models:
    registry: ModelRegistry
    probe: Probe
    engines: EngineFactory

    def release_all(self) -> None:
        """At shutdown, once the frames have drained: every engine let go, and freed now, on the loop, rather than
        by the interpreter's finalization, when OpenVINO's threads can no longer take the GIL."""
        self.registry.release_all()
        self.engines.free_idle()


def build_models(settings: Settings, metrics: Metrics, serving: ServingState, role: Role) -> Models:
    probe = Probe()
    engines = EngineFactory(settings, role, probe, metrics)
    swaps = SwapCounter(metrics)
    registry = ModelRegistry(
        settings.model.repository,
        settings.model.dir,
        engines.build,
        engines.verify,
        memory_limit_mb=settings.model.memory_limit_mb,
        drain_seconds=settings.model.drain_seconds,
        on_change=lambda: publish_model_state(registry, metrics, serving, swaps),  # called only once it is built
    )
    metrics.watch_pool(lambda: registry.active_engine.stats() if registry.active_engine else None)
    return Models(registry, probe, engines)


class EngineFactory:
    """Compiles a version into an engine (API: ADAPTIVE, live gaps batched; worker: THROUGHPUT), and proves it."""

    def __init__(self, settings: Settings, role: Role, probe: Probe, metrics: Metrics) -> None:
        self._settings = settings
        self._role = role
        self._probe = probe
        self._load_seconds = metrics.model_load_seconds
        self._built_any = False

    def build(self, path: Path, name: str) -> DetectionEngine:
        """Read and compile one version (blocking: the registry runs it in a thread)."""
        from app.services.inference.engine import DetectionEngine  # imported here: see TYPE_CHECKING above
        from app.services.inference.model import load_model

        self._built_any = True
        s = self._settings
        model = load_model(
            path,
            device=s.model.device,
            performance_hint=s.model.performance_hint or ("ADAPTIVE" if self._role == "api" else "THROUGHPUT"),
            inference_threads=s.model.inference_threads,
            inference_precision=s.model.inference_precision,
            cache_dir=s.model.cache_dir,
            name=name,
        )
        self._load_seconds.labels(name, "compile").observe(model.compile_seconds)
        pool_size = s.model.max_concurrent or model.optimal_requests
        log.info(
            "model_compiled",
            model=name,
            optimal_requests=model.optimal_requests,
            pool_size=pool_size,
            precision=model.precision,
        )
        return DetectionEngine(
            model,
            pool_size,
            s.detection.queue_size,
            s.images.max_pixels,
            s.images.max_decode_pixels,
            batch_in_live_gaps=self._role == "api",
            latency_budget=s.detection.latency_budget_seconds,
        )

    def free_idle(self) -> None:
        """Free the pools the inference module keeps for a moment after their last request (none ran: nothing)."""
        if self._built_any:
            from app.services.inference.pool import let_go_of_idle_pools  # imported here: see TYPE_CHECKING above

            let_go_of_idle_pools()

    async def verify(self, engine: DetectionEngine) -> None:
        """Warm it, then prove it on the probe frame before it may serve."""
        started = time.perf_counter()
        await engine.warm_up(self._settings.model.warmup_requests)
        warmed = time.perf_counter()
        self._load_seconds.labels(engine.info.name, "warm").observe(warmed - started)
        result, _ = await self._probe.run(EngineCall(engine, None, Priority.INTERACTIVE))
        self._load_seconds.labels(engine.info.name, "probe").observe(time.perf_counter() - warmed)
        if not result.ok:
            raise ModelLoadError(
                f"{engine.info.name} failed the probe frame: expected {result.expected_labels}, "
                f"found {result.found_labels}"
            )


class SwapCounter:
    """Counts each engine put in service as the active one: told apart by identity, so a reload of the active version
    counts too. Holds no engine alive (a weak reference)."""

    def __init__(self, metrics: Metrics) -> None:
        self._swaps = metrics.model_swaps
        self._active: weakref.ref[DetectionEngine] | None = None

    def observe(self, engine: DetectionEngine | None) -> None:
        if engine is None or (self._active is not None and self._active() is engine):
            return
        self._active = weakref.ref(engine)
        self._swaps.labels(engine.info.name).inc()


def publish_model_state(registry: ModelRegistry, metrics: Metrics, serving: ServingState, swaps: SwapCounter) -> None:
    """Every version's state and the active one's description into the metrics; an operator who activated a
    version after a failed start has fixed the service, so it serves again."""
    engine = registry.active_engine
    swaps.observe(engine)
    active = (
        {
            "name": engine.info.name,
            "version": engine.info.version,
            "input_size": f"{engine.info.input_width}x{engine.info.input_height}",
            "device": engine.info.device,
            "precision": engine.precision,
            "output_format": engine.info.output_format.value,
        }
        if engine is not None
        else None
    )
    metrics.set_model_states({v["name"]: v["state"] for v in registry.describe()}, active)
    if engine is not None and serving.phase is Phase.MODEL_FAILED:
        serving.phase, serving.model_error = Phase.READY, None
