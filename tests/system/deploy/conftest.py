"""Fixtures several deploy test files use."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """The real app, built but not started: only its routing table is used."""
    return create_app(Settings(log_level="WARNING"))
