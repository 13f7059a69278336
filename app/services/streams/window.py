"""A stream's frames in flight: at most `size` in the engine at once, and the newest frame first.

Live video wants the latest picture, not a backlog: when `size` frames are being served, one more frame waits;
a newer one replaces it, and the replaced frame is answered `dropped: superseded`. The engine's own refusals
become drops too: a frame past its deadline is `late`, one the pool could not take in time is `overloaded`.
Every frame gets exactly one outcome, delivered as soon as it is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from app.services.core.asyncio_tasks import wait_set
from app.services.core.errors import ApiError, DeadlineExceeded, Overloaded
from app.services.observability.metrics import Metrics
from app.services.streams.protocol import FrameId

log = structlog.get_logger(__name__)

DropReason = Literal["superseded", "late", "overloaded"]


@dataclass(frozen=True)
class Answered:
    frame_id: FrameId
    answer: Any  # what `serve` returned


@dataclass(frozen=True)
class Dropped:
    frame_id: FrameId
    reason: DropReason


@dataclass(frozen=True)
class Failed:
    frame_id: FrameId | None
    error: ApiError


Outcome = Answered | Dropped | Failed
Serve = Callable[[], Awaitable[Any]]
Deliver = Callable[[Outcome], Awaitable[None]]


@dataclass(frozen=True)
class _Frame:
    frame_id: FrameId
    serve: Serve


class FrameWindow:
    def __init__(self, size: int, deliver: Deliver, metrics: Metrics) -> None:
        self._size = size
        self._deliver = deliver
        self._metrics = metrics
        self._running: set[asyncio.Task[None]] = set()
        self._waiting: _Frame | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Frames being served plus the one waiting."""
        return len(self._running) + (self._waiting is not None)

    async def offer(self, frame_id: FrameId, serve: Serve) -> None:
        """Take a frame: served now if the window has room, else it waits (replacing the frame waiting before)."""
        frame = _Frame(frame_id, serve)
        if len(self._running) < self._size:
            self._start(frame)
            return
        replaced, self._waiting = self._waiting, frame
        self._idle.clear()
        if replaced is not None:
            await self.deliver(Dropped(replaced.frame_id, "superseded"))

    async def deliver(self, outcome: Outcome) -> None:
        """Hand one outcome to the stream, counted once by what it was."""
        if isinstance(outcome, Dropped):
            self._metrics.stream_frames_dropped.labels(outcome.reason).inc()
        else:
            self._metrics.stream_frames_answered.labels("detected" if isinstance(outcome, Answered) else "error").inc()
        await self._deliver(outcome)

    async def wait_idle(self, seconds: float) -> bool:
        """True once every frame taken has its outcome; False if some were still running after `seconds`."""
        return await wait_set(self._idle, seconds)

    def cancel(self) -> None:
        """Stop what is still running (the stream is gone and waited long enough); the waiting frame is forgotten."""
        self._waiting = None
        for task in list(self._running):
            task.cancel()

    def _start(self, frame: _Frame) -> None:
        self._idle.clear()
        task = asyncio.create_task(self._run(frame), name=f"stream-frame-{frame.frame_id}")
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("stream_frame_failed", exc_info=error)  # a bug, not a frame's outcome: those are delivered
        if not self._running and self._waiting is None:
            self._idle.set()

    async def _run(self, frame: _Frame) -> None:
        outcome = await outcome_of(frame.frame_id, frame.serve)
        self._running.discard(asyncio.current_task())
        if self._waiting is not None:  # the engine takes the next frame before this answer is sent
            waiting, self._waiting = self._waiting, None
            self._start(waiting)
        await self.deliver(outcome)


async def outcome_of(frame_id: FrameId, serve: Serve) -> Outcome:
    """What became of one frame: its answer, a drop the engine's refusal means, or the error it met."""
    try:
        return Answered(frame_id, await serve())
    except DeadlineExceeded:
        return Dropped(frame_id, "late")
    except Overloaded:
        return Dropped(frame_id, "overloaded")
    except ApiError as exc:
        return Failed(frame_id, exc)
