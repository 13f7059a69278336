"""hazard-api (app/entrypoints/api.py): what it hands uvicorn, whatever its command line."""

from __future__ import annotations

import pytest

from app.entrypoints.server import BoundedHttpProtocol
from tests.support.launcher import UVICORN_GRACEFUL_SECONDS, uvicorn_run_for


@pytest.mark.parametrize("argv", [["--host", "0.0.0.0", "--port", "8000"], []], ids=["image-arguments", "none"])
def test_launcher_serves_the_app_in_one_worker_with_bounded_connections(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, options = uvicorn_run_for(argv, monkeypatch)
    assert target == "app.main:app"
    assert options["workers"] == 1
    assert options["access_log"] is False
    assert options["timeout_graceful_shutdown"] == UVICORN_GRACEFUL_SECONDS
    # What one process accepts is bounded whatever the launcher's flags (app/entrypoints/server.py).
    assert issubclass(options["http"], BoundedHttpProtocol)
    assert options["limit_concurrency"] == options["http"].max_connections >= 1
    assert options["ws_per_message_deflate"] is False  # frames are compressed images: deflate costs, saves nothing
