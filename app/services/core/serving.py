"""Where this process is in its life, and why it cannot serve when it cannot.

Owned and updated by the runtime; read by detection and health, which need nothing else of the runtime.
The engines themselves belong to the model registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    MODEL_FAILED = "model_failed"
    SHUTTING_DOWN = "shutting_down"


@dataclass
class ServingState:
    phase: Phase = Phase.STARTING
    model_error: str | None = None
