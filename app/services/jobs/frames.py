"""A job's frame as the tracker sees it: the worker tracks it as it is done, the GeoJSON export again in frame order,
both through this one rule for its time and place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.services.inference.types import Detection
from app.services.jobs.store import frame_id
from app.services.tracking.service import frame_input
from app.services.tracking.types import FrameInput, FrameMeta

NOMINAL_FPS = 15.0  # a dash camera's rate: the spacing of job frames that carry no capture time
MIN_SPARSE_HITS = 2  # a hazard is never confirmed on one frame, however sparse the job's frames


def job_frame_input(
    job_created_at: float,
    index: int,
    meta: dict[str, Any],
    detections: Sequence[Detection],
    model: str,
    image_size: tuple[int, int] | None = None,
) -> FrameInput:
    """The frame's time is its `captured_at`, else NOMINAL_FPS after the frame before it (from the job's start), so
    the tracker's time gap works for frames that carry no time. `image_size` (width, height) lets its boxes be
    projected onto the road, as a session's are."""
    received_at = _nominal_time(job_created_at, index)
    return frame_input(
        frame_id(index), detections, _frame_meta(meta), received_at=received_at, model=model, image_size=image_size
    )


def tracked_job_frame(
    job_created_at: float,
    index: int,
    meta: dict[str, Any],
    meta_before: dict[str, Any] | None,
    detections: Sequence[Detection],
    model: str,
    min_hits: int,
    image_size: tuple[int, int] | None = None,
) -> tuple[FrameInput, int]:
    """The frame as the tracker sees it (`job_frame_input`), and the hits that confirm a hazard at it: `hits_needed`
    for how long after the job's frame before it (`meta_before`; None: unknown, or the first) it was taken."""
    frame = job_frame_input(job_created_at, index, meta, detections, model, image_size)
    if index == 0 or meta_before is None:
        return frame, min_hits
    before = _frame_meta(meta_before).captured_at
    taken_before = before if before is not None else _nominal_time(job_created_at, index - 1)
    return frame, hits_needed(min_hits, frame.at - taken_before)


def hits_needed(min_hits: int, seconds_apart: float | None) -> int:
    """Frames that confirm a hazard in a job whose frames are `seconds_apart` (from the frame before): TRACK_MIN_HITS
    is meant for a dash camera's NOMINAL_FPS, so sparser frames (a drive sampled every few metres, photos) each stand
    for several and need as many seconds of views, never fewer than MIN_SPARSE_HITS frames (nor more than
    `min_hits`). A hazard is in view for ~10-15 m: sampled every 3-5 m it is seen in 2-4 frames, which `min_hits`
    (5) never confirmed."""
    if seconds_apart is None or seconds_apart * NOMINAL_FPS <= 1:
        return min_hits
    return max(min(MIN_SPARSE_HITS, min_hits), min(min_hits, math.ceil(min_hits / (seconds_apart * NOMINAL_FPS))))


def _nominal_time(job_created_at: float, index: int) -> float:
    return job_created_at + index / NOMINAL_FPS


def _frame_meta(meta: dict[str, Any]) -> FrameMeta:
    captured = meta.get("captured_at")
    return FrameMeta(
        lat=meta.get("lat"),
        lon=meta.get("lon"),
        heading=meta.get("heading"),
        speed_mps=meta.get("speed_mps"),
        captured_at=datetime.fromisoformat(captured).timestamp() if captured else None,
    )
