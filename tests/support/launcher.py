"""What hazard-api (app/entrypoints/api.py) hands uvicorn for a command line, without serving."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

import pytest
import uvicorn

import app.entrypoints.api as launcher

UVICORN_GRACEFUL_SECONDS = 10  # --timeout-graceful-shutdown in every launcher


def uvicorn_run_for(argv: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """The one uvicorn.run(target, **options) that launcher.main(argv) makes (main() installs signal handlers: they
    are put back)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: calls.append((target, options)))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        launcher.main(argv)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    ((target, options),) = calls
    return target, options
