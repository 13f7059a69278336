"""This process in its fleet: heartbeats and convergence to the desired model state, and the model control the
admin API and the control center act through."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.fleet.agent import Describe, FleetAgent, FleetControl
from app.services.fleet.model_control import ModelControl
from app.services.fleet.restart import PROCESS_RESTART
from app.services.inference.registry import ModelRegistry
from app.settings import Settings
from app.wiring.process import ProcessInfo
from app.wiring.redis import RedisParts


@dataclass(frozen=True)
class Fleet:
    agent: FleetAgent
    model_control: ModelControl


def build_fleet(
    settings: Settings, redis: RedisParts, registry: ModelRegistry, process: ProcessInfo, describe: Describe
) -> Fleet:
    control = FleetControl(redis.client, settings.fleet.name, settings.fleet.heartbeat_seconds)
    agent = FleetAgent(
        control,
        registry,
        describe,
        process_id=process.process_id,
        role=process.role,
        restart=PROCESS_RESTART,
        holds_models=process.holds_models,
        heartbeat_seconds=settings.fleet.heartbeat_seconds,
        poll_seconds=settings.fleet.poll_seconds,
    )
    return Fleet(agent, ModelControl(registry, control, local=process.holds_models))
