"""`hazard-worker`: a process that holds the model and works frames from the job queue; no HTTP routes.

It loads the fleet's desired active model (as an API process does), publishes a heartbeat with role
`worker`, obeys the same control commands, serves its own Prometheus metrics on WORKER_METRICS_PORT, and
takes live frames (remote-mode API processes) before batch frames. SIGTERM or SIGINT: no new frame is taken,
the frames in hand finish (WORKER_SHUTDOWN_SECONDS at most), the rest stay queued for other workers, exit 0. A restart
asked through the fleet (app/services/fleet/restart.py) stops the same way, then exits for the supervisor or
re-executes itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import start_http_server

from app.services.fleet.restart import PROCESS_RESTART, is_supervised
from app.services.observability.logging import configure_logging
from app.services.observability.metrics import Metrics
from app.services.observability.tracing import configure_tracing
from app.settings import Settings, SettingsError, load_settings
from app.wiring.lifecycle import Lifecycle
from app.wiring.parts import build_parts

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> None:
    parts = build_parts(settings, role="worker")
    lifecycle = Lifecycle(parts)
    process_id = parts.process.process_id
    metrics_server = _serve_metrics(parts.metrics, settings.workers.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    starting = asyncio.create_task(lifecycle.start(), name="lifecycle-start")
    log.info("worker_started", process_id=process_id, metrics_port=settings.workers.metrics_port)
    await stop.wait()
    log.info("worker_stopping", process_id=process_id)
    await lifecycle.stop_after(starting)
    if metrics_server is not None:
        metrics_server.shutdown()
        metrics_server.server_close()  # the port is free for the process that comes back
    log.info("worker_stopped", process_id=process_id)


def _serve_metrics(metrics: Metrics, port: int) -> WSGIServer | None:
    if port == 0:
        return None
    server, _ = start_http_server(port, registry=metrics.registry)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_json)
    configure_tracing("hazard-worker")
    with PROCESS_RESTART.serving(supervised=is_supervised(settings.fleet.supervised, os.environ)):
        asyncio.run(serve(settings))
    if PROCESS_RESTART.requested:
        PROCESS_RESTART.come_back()


if __name__ == "__main__":
    main()
