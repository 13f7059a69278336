"""Work that runs ahead of its consumer on a thread of its own, a bounded number of items ahead: a drive's decoding
and sampling while its earlier frames upload. The queue between them holds at most `size` items, so a producer
faster than the uploads waits for room (backpressure) and memory stays bounded however long the video is."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_SIZE = 4
_POLL_S = 0.1  # how soon a blocked producer or consumer notices close()


class _End:
    """Put after the last item."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Ahead(Generic[T]):
    """`get()` the items `produce()` yields, in order, while it runs ahead of the caller on a thread. An exception
    `produce` raises is raised by the `get()` that reaches it (wrapped by `failure`, when given, into the error the
    caller reports); `get()` answers None after the last item. `close()` stops and joins the thread."""

    def __init__(
        self,
        produce: Callable[[], Iterator[T]],
        size: int = DEFAULT_SIZE,
        failure: Callable[[Exception], Exception] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size: at least 1")
        self.size = size
        self.high_water = 0  # the most items the queue ever held: never more than `size`
        self.waited_for_room = threading.Event()  # set once the producer found the queue full
        self._produce = produce
        self._failure = failure
        self._queue: queue.Queue[T | _End | _Failed] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(item) or self._stop.is_set():
                    return
        except Exception as exc:  # handed to the consumer, who reports it
            self._put(_Failed(self._failure(exc) if self._failure is not None else exc))
            return
        self._put(_End())

    def _put(self, entry: T | _End | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S if self.waited_for_room.is_set() else 0)
            except queue.Full:
                self.waited_for_room.set()
                continue
            self.high_water = max(self.high_water, self._queue.qsize())
            return True
        return False

    def get(self) -> T | None:
        """The next item, waiting for it; None after the last one (and after close())."""
        while not self._done and not self._stop.is_set():
            try:
                entry = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(entry, _End):
                self._done = True
            elif isinstance(entry, _Failed):
                self._done = True
                raise entry.error
            else:
                return entry
        return None

    def close(self) -> None:
        """Stop the producer at its next item and wait for its thread: what it holds (an open video) can be closed
        after this returns."""
        self._stop.set()
        self._thread.join()
