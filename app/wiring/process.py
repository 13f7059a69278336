"""Which process this is: its role, its id in the fleet, whether it holds models, when it started."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from app.services.fleet.agent import new_process_id
from app.settings import Settings

Role = Literal["api", "worker"]


@dataclass(frozen=True)
class ProcessInfo:
    role: Role
    process_id: str
    holds_models: bool  # a worker, or an API process in local mode; a remote-mode web tier loads none
    started_at: float


def build_process(settings: Settings, role: Role) -> ProcessInfo:
    return ProcessInfo(
        role=role,
        process_id=new_process_id(role),
        holds_models=role == "worker" or settings.inference_mode == "local",
        started_at=time.time(),
    )
