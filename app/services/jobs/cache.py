"""Results keyed by what determines them: SHA-256 of the frame bytes, the model version, the options.

Best effort: a cache that cannot be reached is a miss, never an error. Hashing a 100 KB frame costs ~0.1 ms
(see docs/PERFORMANCE.md), which is why live frames consult it only with DETECT_CACHE=true.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace

import structlog
from redis.asyncio import Redis

from app.services.core.redis_client import REDIS_FAILURES
from app.services.core.timing import ms_since
from app.services.inference.codec import result_from_json, result_json
from app.services.inference.types import DetectionResult, DetectOptions, FrameEngine, ModelInfo, Priority
from app.services.observability.metrics import Metrics

log = structlog.get_logger(__name__)


class ResultCache:
    def __init__(self, redis: Redis, ttl_seconds: int, metrics: Metrics) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._metrics = metrics

    @staticmethod
    def key(frame: bytes, model: ModelInfo, options: DetectOptions) -> str:
        digest = hashlib.sha256(frame).hexdigest()
        return f"result-cache:{digest}:{model.name}:{model.version}:{options.conf}:{options.iou}:{options.max_det}"

    async def get(self, key: str) -> DetectionResult | None:
        try:
            raw = await self._redis.get(key)
        except REDIS_FAILURES as exc:
            self._metrics.result_cache.labels("error").inc()
            log.warning("result_cache_unreachable", error=type(exc).__name__)
            return None
        self._metrics.result_cache.labels("miss" if raw is None else "hit").inc()
        return None if raw is None else result_from_json(json.loads(raw))[0]

    async def put(self, key: str, result: DetectionResult, model: ModelInfo) -> None:
        try:
            await self._redis.set(key, json.dumps(result_json(result, model)), ex=self._ttl)
        except REDIS_FAILURES as exc:
            log.warning("result_cache_unreachable", error=type(exc).__name__)

    async def detect(
        self, engine: FrameEngine, frame: bytes, options: DetectOptions, deadline: float, priority: Priority
    ) -> DetectionResult:
        """The cached result when there is one (no inference runs), else the engine's, then cached."""
        started = time.perf_counter()
        key = self.key(frame, engine.info, options)
        hit = await self.get(key)
        if hit is not None:
            return replace(hit, cached=True, timings_ms={"cache": ms_since(started)})
        looked_up = ms_since(started)
        result = await engine.detect(frame, options, deadline, priority)
        await self.put(key, result, engine.info)
        return replace(result, timings_ms={"cache": looked_up, **result.timings_ms})
