"""A queue Redis failure: the client is told its kind, the operator's log its words (connect or read)."""

from __future__ import annotations

import pytest
import redis.exceptions
from structlog.testing import capture_logs

from app.services.core.errors import QueueUnavailable
from app.services.jobs.queue import queue_errors


def test_a_redis_failure_is_queue_unavailable_and_its_words_are_logged() -> None:
    with capture_logs() as logs, pytest.raises(QueueUnavailable) as raised, queue_errors():
        raise redis.exceptions.TimeoutError("Timeout connecting to server")
    assert raised.value.details == {"reason": "TimeoutError"}
    assert raised.value.retry_after == 1
    assert [(entry["event"], entry["error"]) for entry in logs] == [
        ("queue_redis_failed", "Timeout connecting to server")
    ]
