"""What this process says about itself in its fleet heartbeat (the registry adds its models)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass

from app import __version__
from app.services.core.breakers import AsyncBreaker
from app.services.core.serving import ServingState
from app.services.detection.service import DetectionService
from app.services.inference.registry import ModelRegistry
from app.services.observability.memory import rss_mb
from app.services.uploads.service import UploadService
from app.wiring.process import ProcessInfo


@dataclass(frozen=True)
class ProcessDescription:
    process: ProcessInfo
    serving: ServingState
    registry: ModelRegistry
    detection: DetectionService
    redis_breaker: AsyncBreaker
    uploads: UploadService
    memory_limit_mb: float

    def __call__(self) -> dict[str, object]:
        engine = self.registry.active_engine
        return {
            "role": self.process.role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "code_version": __version__,
            "started_at": self.process.started_at,
            "uptime_seconds": round(time.time() - self.process.started_at, 1),
            "phase": self.serving.phase.value,
            "rss_mb": round(rss_mb(), 1),
            "memory_limit_mb": self.memory_limit_mb,
            "pool": asdict(engine.stats()) if engine is not None else None,
            "in_flight": self.detection.in_flight,
            "breakers": {"redis": self.redis_breaker.state, self.uploads.breaker.name: self.uploads.breaker.state},
            "upload_spool": self.uploads.spooled,
        }
