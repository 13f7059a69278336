"""Circuit breakers around Redis and Cloudinary: pybreaker's state machine, driven from asyncio.

pybreaker's own async path needs Tornado, and `breaker.call(async_fn)` would count an
un-awaited coroutine as a success, so the await happens here and only its outcome is
handed to pybreaker. At most one trial call runs while a breaker is half-open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pybreaker
import structlog

from app.services.core.errors import ApiError
from app.services.core.types import BreakerListener

T = TypeVar("T")

log = structlog.get_logger(__name__)


# Raised when a breaker refuses a call, and by pybreaker when a failure trips it open.
BreakerOpen = pybreaker.CircuitBreakerError


class _StateLogger(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: BreakerListener | None) -> None:
        self._on_change = on_change

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        log.warning(
            "breaker_state_changed", breaker=cb.name, old=old_state.name if old_state else None, new=new_state.name
        )
        if self._on_change is not None:
            self._on_change(str(cb.name), new_state.name)


class AsyncBreaker:
    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_seconds: float,
        failures: tuple[type[BaseException], ...],
        on_change: BreakerListener | None = None,
    ) -> None:
        self.name = name
        # Only the dependency's own failures trip the breaker; a bad request or an ApiError never does.
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            name=name,
            exclude=[lambda exc: not isinstance(exc, failures) or isinstance(exc, ApiError)],
            listeners=[_StateLogger(on_change)],
        )
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    def _still_open(self) -> bool:
        opened_at = self._breaker._state_storage.opened_at  # no public accessor in pybreaker 1.4
        reset = timedelta(seconds=self._breaker.reset_timeout)
        return opened_at is not None and datetime.now(UTC) < opened_at + reset

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        state = self.state
        if state == pybreaker.STATE_OPEN and self._still_open():
            raise BreakerOpen(f"{self.name} circuit is open")
        trial = state != pybreaker.STATE_CLOSED
        if trial and self._trial_in_flight:
            raise BreakerOpen(f"{self.name} circuit is testing recovery")
        self._trial_in_flight = trial
        try:
            result = await func()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._opened_meanwhile():
                self._breaker.call(_reraise, exc)  # records the failure and raises it (BreakerOpen if it trips)
            raise
        finally:
            if trial:
                self._trial_in_flight = False
        if self._opened_meanwhile():
            return result  # a concurrent call tripped the breaker; this one still succeeded and must say so
        return self._breaker.call(lambda: result)

    def _opened_meanwhile(self) -> bool:
        """Open and still waiting: reporting an outcome through pybreaker now would raise instead of record."""
        return self.state == pybreaker.STATE_OPEN and self._still_open()


def _reraise(exc: Exception) -> None:
    raise exc
