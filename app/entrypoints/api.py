"""`hazard-api` and `python -m app`: serve the API with uvicorn, the way every launcher of this project does.

One worker (OpenVINO already spreads one inference over every core), uvloop and httptools (named, never a silent
fallback), no access log (the app logs each request itself), and 10 s for uvicorn's graceful shutdown before the
app's own drain. What one process accepts is bounded (app/entrypoints/server.py): HTTP_MAX_CONNECTIONS open connections
(503 past it when all are busy; idle and half-open ones are closed first), HTTP_HEADER_TIMEOUT_SECONDS for a request
head, HTTP_KEEPALIVE_TIMEOUT_SECONDS idle, and the descriptor limit raised to fit. HOST and PORT come from the
environment unless --host/--port are given; every other setting is read by app.settings from the environment.
A restart asked through the fleet (app/services/fleet/restart.py) drains like SIGTERM, then the process exits for
its supervisor or re-executes itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from app.entrypoints.server import bounded_protocol, fit_descriptor_limit
from app.entrypoints.websocket import websocket_options
from app.services.fleet.restart import PROCESS_RESTART, is_supervised
from app.services.observability.logging import configure_logging
from app.settings import Settings, SettingsError, get_settings

APP = "app.main:app"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
GRACEFUL_SHUTDOWN_SECONDS = 10


def _port(value: str) -> int:
    port = int(value) if value.isdigit() else 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hazard-api",
        description="Serve the Hazard Detection API (settings such as MODEL_DIR and REDIS_URL: environment).",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", DEFAULT_HOST),
        help=f"address to bind (default: $HOST, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("PORT", str(DEFAULT_PORT)),  # a string default goes through type= too
        help=f"TCP port (default: $PORT, else {DEFAULT_PORT})",
    )
    return parser.parse_args(argv)


def _exit_after_shutdown(signum: int, frame: FrameType | None) -> None:
    # uvicorn catches SIGTERM/SIGINT while it serves, shuts down gracefully, then raises the signal again for the
    # handler it found. A completed shutdown asked for with SIGTERM is a clean stop: exit 0 (Ctrl-C: 130), unless the
    # fleet asked for a restart: then the process comes back.
    if PROCESS_RESTART.requested:
        PROCESS_RESTART.come_back()
    sys.exit(0 if signum == signal.SIGTERM else 128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_json)
    max_connections = fit_descriptor_limit(settings.http.max_connections)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_after_shutdown)
    supervised = is_supervised(settings.fleet.supervised, os.environ)
    with PROCESS_RESTART.serving(supervised=supervised):  # comes back in _exit_after_shutdown, inside uvicorn.run
        _serve(args, settings, max_connections)


def _serve(args: argparse.Namespace, settings: Settings, max_connections: int) -> None:
    uvicorn.run(
        APP,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",  # named, not "auto": a missing uvloop fails the start instead of quietly serving on asyncio's
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        http=bounded_protocol(settings.http.header_timeout_seconds, max_connections),
        limit_concurrency=max_connections,
        timeout_keep_alive=settings.http.keepalive_timeout_seconds,
        **websocket_options(settings.stream_max_message_bytes),
    )


if __name__ == "__main__":
    main()
