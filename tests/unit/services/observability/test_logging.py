"""Logging levels: what LOG_LEVEL turns on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from app.services.observability.logging import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The process's logging as it was: later tests capture structlog's events at the level they expect."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aiosqlite_level = logging.getLogger("aiosqlite").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)  # not `root.level =`: setLevel also clears the loggers' cached answers
    logging.getLogger("aiosqlite").setLevel(aiosqlite_level)
    structlog.configure(**structlog_config)


@pytest.mark.usefixtures("restored_logging")
def test_debug_turns_on_ours_but_not_the_registry_drivers_per_operation_lines() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("app.services.registry").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restored_logging")
def test_a_quieter_level_holds_for_the_registry_driver_too() -> None:
    configure_logging("ERROR")
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.WARNING)
