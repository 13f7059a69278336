"""A job's frame as the tracker sees it: the worker tracks it as it is done, the GeoJSON export again in frame order,
both through this one rule for its time and place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.services.inference.types import Detection
from app.services.jobs.store import frame_id
from app.services.tracking.service import frame_input
from app.services.tracking.types import FrameInput, FrameMeta

NOMINAL_FPS = 15.0  # a dash camera's rate: the spacing of job frames that carry no capture time


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
    captured = meta.get("captured_at")
    frame_meta = FrameMeta(
        lat=meta.get("lat"),
        lon=meta.get("lon"),
        heading=meta.get("heading"),
        speed_mps=meta.get("speed_mps"),
        captured_at=datetime.fromisoformat(captured).timestamp() if captured else None,
    )
    received_at = job_created_at + index / NOMINAL_FPS
    return frame_input(
        frame_id(index), detections, frame_meta, received_at=received_at, model=model, image_size=image_size
    )
