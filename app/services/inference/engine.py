"""The detection engine: decode -> letterbox -> infer -> postprocess, with per-stage timings."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from app.services.core.timing import ms
from app.services.inference.model import LoadedModel
from app.services.inference.pool import InferencePool
from app.services.inference.postprocess import decode_output
from app.services.inference.preprocess import Letterbox, decode, letterbox
from app.services.inference.types import (
    Detection,
    DetectionResult,
    DetectOptions,
    ModelInfo,
    PoolStats,
    Priority,
)


class DetectionEngine:
    def __init__(
        self,
        model: LoadedModel,
        pool_size: int,
        max_queue: int,
        max_pixels: int,
        max_decode_pixels: int | None = None,
        *,
        batch_in_live_gaps: bool = False,
        latency_budget: float | None = None,
    ) -> None:
        self.info: ModelInfo = model.info
        self.precision = model.precision
        self.compile_seconds = model.compile_seconds
        self.pool = InferencePool(
            model.compiled,
            pool_size,
            max_queue,
            batch_in_live_gaps=batch_in_live_gaps,
            latency_budget=latency_budget,
            solo=model.solo,
        )
        self._max_pixels = max_pixels
        self._max_decode_pixels = max_decode_pixels

    def refuse_if_busy(self, deadline: float) -> None:
        self.pool.refuse_if_busy(deadline)

    def stats(self) -> PoolStats:
        return self.pool.stats()

    async def warm_up(self, count: int, deadline_seconds: float = 30.0) -> None:
        """Run `count` full-size inferences so the first real request pays no first-call costs, then one more than
        the pool holds at once: every infer request (each stream, and the solo one) has run before traffic comes."""
        blank = np.full((1, self.info.input_height, self.info.input_width, 3), 114, np.uint8)
        deadline = time.monotonic() + deadline_seconds
        for _ in range(count):
            await self.pool.infer(blank, deadline)
        if count:
            await asyncio.gather(*(self.pool.infer(blank, deadline) for _ in range(self.pool.size + 1)))
        self.pool.forget_service_time()  # real frames measure it

    def _prepare(self, data: bytes, deadline: float) -> tuple[np.ndarray, Letterbox, float, float] | None:
        if time.monotonic() >= deadline:  # waited for a decode thread past its deadline: never start the decode
            return None
        started = time.perf_counter()
        decoded = decode(data, self.info.input_height, self.info.input_width, self._max_pixels, self._max_decode_pixels)
        decoded_at = time.perf_counter()
        batch, transform = letterbox(decoded, self.info.input_height, self.info.input_width)
        return batch, transform, decoded_at - started, time.perf_counter() - decoded_at

    async def detect(
        self, data: bytes, options: DetectOptions, deadline: float, priority: Priority = Priority.INTERACTIVE
    ) -> DetectionResult:
        """Detect hazards in one encoded image; raises the typed errors of app.services.core.errors."""
        if priority is Priority.BATCH:
            async with self.pool.batch_turn():
                return await self._detect(data, options, deadline, priority)
        return await self._detect(data, options, deadline, priority)

    async def _detect(
        self, data: bytes, options: DetectOptions, deadline: float, priority: Priority
    ) -> DetectionResult:
        with self.pool.admission(priority, deadline) as ticket:
            try:  # nor wait for one past the deadline (the thread, if it started, finishes on its own)
                async with asyncio.timeout(deadline - time.monotonic()):
                    prepared = await asyncio.to_thread(self._prepare, data, deadline)
            except TimeoutError:
                prepared = None
            if prepared is None:
                self.pool.expire(deadline)  # counted with the frames that expired waiting for the model; raises
            assert prepared is not None
            batch, transform, decode_s, preprocess_s = prepared
            output, queue_s, infer_s = await self.pool.infer(batch, deadline, priority, ticket)
        started = time.perf_counter()
        boxes, scores, class_ids = decode_output(
            output, self.info.output_format, options.conf, options.iou, options.max_det
        )
        boxes = transform.to_original(boxes)
        detections = [
            Detection(self.info.class_names[c], int(c), round(float(s), 4), *(round(float(v), 1) for v in b))
            for b, s, c in zip(boxes, scores, class_ids, strict=True)
        ]
        timings = {
            "decode": ms(decode_s),
            "preprocess": ms(preprocess_s),
            "queue_wait": ms(queue_s),
            "infer": ms(infer_s),
            "postprocess": ms(time.perf_counter() - started),
        }
        return DetectionResult(detections, transform.width, transform.height, timings)
