"""One real server process for the benchmarks' tests (package scope: their modules share its start-up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_process import RedisProcess
from tests.support.server import Server


@pytest.fixture(scope="package")
def server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Idle keep-alive connections closed after 1 s: the client must notice and not send on them.
    running = Server(redis_server.url, tmp_path_factory.mktemp("bench-server"), HTTP_KEEPALIVE_TIMEOUT_SECONDS="1")
    running.wait_ready()
    yield running
    running.stop()
