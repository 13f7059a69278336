"""What this process can serve right now: its lifecycle phase and the engine (if a model is loaded).

Owned and updated by the runtime; read by detection and health, which need nothing else of the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine imports OpenVINO; readers of the state need only its type
    from app.services.inference.engine import DetectionEngine


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    MODEL_FAILED = "model_failed"
    SHUTTING_DOWN = "shutting_down"


@dataclass
class ServingState:
    phase: Phase = Phase.STARTING
    engine: DetectionEngine | None = None
    model_error: str | None = None

    @property
    def model_ok(self) -> bool:
        return self.engine is not None and self.phase in (Phase.READY, Phase.SHUTTING_DOWN)
