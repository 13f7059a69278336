"""Plain data of the engine. No OpenVINO here: routers, metrics and uploads import these without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Protocol


class ModelLoadError(Exception):
    """The model folder is missing, incomplete or not a detection export; the message names the file."""


class OutputFormat(StrEnum):
    RAW = "raw"  # [1, 4 + nc, N]: cx, cy, w, h, then per-class scores (YOLOv8 / YOLO11)
    END_TO_END = "end_to_end"  # [1, N, 6]: x1, y1, x2, y2, score, class, NMS already applied (YOLO26 / v10)


class Priority(IntEnum):
    INTERACTIVE = 0  # a live /detect frame: someone is waiting for it
    BATCH = 1  # a job's frame: runs only on capacity live frames leave free


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    class_names: tuple[str, ...]
    input_height: int
    input_width: int
    stride: int
    output_format: OutputFormat
    device: str


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class DetectionResult:
    detections: list[Detection]
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # served from the result cache: no inference ran


@dataclass(frozen=True)
class DetectOptions:
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100


@dataclass(frozen=True)
class PoolStats:
    size: int
    queued: int
    in_flight: int
    rejected: int
    expired: int
    completed: int
    solo: int = 0  # of the completed, run alone on the LATENCY compile (ADAPTIVE hint)


class FrameEngine(Protocol):
    """What runs a frame: a compiled version's engine (DetectionEngine), named by its ModelInfo."""

    @property
    def info(self) -> ModelInfo: ...

    def refuse_if_busy(self, deadline: float) -> None:
        """Overloaded now, if a live frame admitted now would be refused."""

    async def detect(
        self, data: bytes, options: DetectOptions, deadline: float, priority: Priority = Priority.INTERACTIVE
    ) -> DetectionResult: ...
