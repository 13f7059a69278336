"""The one way the identity stores meet a Redis failure: a 503 the HTTP layer shapes, never a stack trace."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from app.services.core.errors import IdentityStoreUnavailable
from app.services.core.redis_client import REDIS_FAILURES

T = TypeVar("T")


async def guarded(operation: Awaitable[T]) -> T:
    try:
        return await operation
    except REDIS_FAILURES as exc:
        raise IdentityStoreUnavailable(details={"reason": type(exc).__name__}, retry_after=1) from exc


def optional_float(text: str | None) -> float | None:
    """Stored timestamps: '' (or absent) is None."""
    return float(text) if text else None


def float_text(value: float | None) -> str:
    return "" if value is None else repr(float(value))
