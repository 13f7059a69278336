"""Where a live frame's inference runs: this process's engine (INFERENCE_MODE=local) or the queue's workers
(INFERENCE_MODE=remote). Neither imports OpenVINO: the registry hands engines around, and a remote-mode
process never builds one.
"""

from __future__ import annotations

import time
from typing import Protocol

from app.services.core.timing import ms_since
from app.services.inference.codec import result_from_json
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import DetectionResult, DetectOptions, FrameEngine, ModelInfo, Priority
from app.services.jobs.cache import ResultCache
from app.services.jobs.queue import FrameQueue, queue_errors, raise_error_json
from app.services.observability.tracing import record_stage_spans, stage_span, tracing_on

ENGINE_INFERENCE_STEPS = ("queue_wait", "infer", "postprocess")


class BoundDetector(Protocol):
    """One frame's detector, chosen at admission: a hot-swap meanwhile does not move the frame."""

    label: str  # the version it will run on, as logs and metrics name it ("remote" until a worker answers)

    def refuse_if_busy(self, deadline: float) -> None:
        """Overloaded at once when the frame could only be refused later: before anything is spent on it."""

    async def detect(
        self, frame: bytes, options: DetectOptions, deadline: float
    ) -> tuple[DetectionResult, ModelInfo]: ...


class Detector(Protocol):
    def bind(self, model: str | None) -> BoundDetector:
        """Refuses at once (ModelNotFound, ModelNotLoaded, ModelNotReady) when nothing can serve `model`."""
        ...


class EngineCall:
    def __init__(self, engine: FrameEngine, cache: ResultCache | None, priority: Priority) -> None:
        self._engine = engine
        self._cache = cache
        self._priority = priority
        self.label = engine.info.name

    def refuse_if_busy(self, deadline: float) -> None:
        if self._priority is Priority.INTERACTIVE:  # batch frames are bounded by their workers instead
            self._engine.refuse_if_busy(deadline)

    async def detect(self, frame: bytes, options: DetectOptions, deadline: float) -> tuple[DetectionResult, ModelInfo]:
        engine = self._engine
        if self._cache is None:
            result = await engine.detect(frame, options, deadline, self._priority)
        else:
            result = await self._cache.detect(engine, frame, options, deadline, self._priority)
        if tracing_on():
            record_stage_spans(engine_stages(result.timings_ms), time.time_ns())
        return result, engine.info


class LocalDetector:
    def __init__(self, registry: ModelRegistry, cache: ResultCache | None, priority: Priority) -> None:
        self._registry = registry
        self._cache = cache
        self._priority = priority

    def bind(self, model: str | None) -> EngineCall:
        return EngineCall(self._registry.engine_for(model), self._cache, self._priority)


class QueueCall:
    label = "remote"

    def __init__(self, queue: FrameQueue, model: str | None) -> None:
        self._queue = queue
        self._model = model

    def refuse_if_busy(self, deadline: float) -> None:
        """The workers' engines are elsewhere: what they cannot take in time comes back as their error."""

    async def detect(self, frame: bytes, options: DetectOptions, deadline: float) -> tuple[DetectionResult, ModelInfo]:
        started = time.perf_counter()
        # The worker's span continues this one's trace (the job carries its traceparent). The queue's Redis down,
        # frozen or unreachable: 503 with Retry-After, not 500 (seen in the rehearsal's 5 s freeze).
        with stage_span("queue"), queue_errors():
            answer = await self._queue.run_live(frame, options, self._model, deadline)
        if "error" in answer:
            raise_error_json(answer["error"])
        result, model = result_from_json(answer["result"])
        result.timings_ms["queue_round_trip"] = ms_since(started)
        return result, model


def engine_stages(timings_ms: dict[str, float]) -> list[tuple[str, float, dict[str, float]]]:
    """The engine's measured steps as trace stages, in order: a result cache lookup, decode (with the letterbox),
    inference (the wait for an infer request, the inference, the postprocess). A cached result has only the first."""
    groups = {"result_cache": ("cache",), "decode": ("decode", "preprocess"), "inference": ENGINE_INFERENCE_STEPS}
    stages = []
    for stage, steps in groups.items():
        measured = {step: timings_ms[step] for step in steps if step in timings_ms}
        if measured:
            stages.append((stage, sum(measured.values()), measured))
    return stages


class RemoteDetector:
    """Every live frame goes through the queue at interactive priority; the workers pick the model."""

    def __init__(self, queue: FrameQueue) -> None:
        self._queue = queue

    def bind(self, model: str | None) -> QueueCall:
        return QueueCall(self._queue, model)
