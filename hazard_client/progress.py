"""How `hazard ingest` shows where it is: rich's progress bars on a terminal, plain periodic lines elsewhere (a log,
a CI job, a pipe): no carriage returns or escape sequences that would garble a file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

QUIET_SECONDS = 60.0  # plain lines: nothing changed, nothing said, for up to this long


@dataclass
class Counts:
    """Frames of this ingestion (files already finished by an earlier run included)."""

    total: int = 0
    uploaded: int = 0
    processed: int = 0
    failed: int = 0
    cached: int = 0


class Reporter(Protocol):
    def update(self, counts: Counts) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self, counts: Counts) -> None: ...


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} frames/s" if task.speed else "- frames/s", style="progress.data.speed")


class BarReporter:
    """On a terminal: an upload bar and a processing bar, with rate and time left (rich estimates both)."""

    def __init__(self, console: Console, counts: Counts) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            _Rate(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._upload: TaskID = self._progress.add_task("uploaded", total=counts.total, extra="")
        self._process: TaskID = self._progress.add_task("processed", total=counts.total, extra="")
        self._progress.start()
        self.update(counts)

    def update(self, counts: Counts) -> None:
        self._progress.update(self._upload, total=counts.total, completed=counts.uploaded)
        extra = f"failed {counts.failed}, cached {counts.cached}"
        self._progress.update(self._process, total=counts.total, completed=counts.processed, extra=extra)

    def note(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def close(self, counts: Counts) -> None:
        self.update(counts)
        self._progress.stop()


class LineReporter:
    """Elsewhere: one plain line every `every` seconds (and a last one), with rate and ETA of this run."""

    def __init__(self, stream: IO[str], counts: Counts, every: float) -> None:
        self._stream = stream
        self._every = every
        self._started = time.monotonic()
        self._processed_at_start: int | None = None  # the first count seen: frames done before it are not this rate
        self._last_line = float("-inf")
        self._last_text = ""

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        if now - self._last_line >= self._every:
            self._write(counts, now, unless_same=now - self._last_line < QUIET_SECONDS)

    def note(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()

    def close(self, counts: Counts) -> None:
        self._write(counts, time.monotonic(), unless_same=True)

    def _write(self, counts: Counts, now: float, unless_same: bool = False) -> None:
        if self._processed_at_start is None:
            self._started, self._processed_at_start = now, counts.processed
        elapsed = now - self._started
        rate = (counts.processed - self._processed_at_start) / elapsed if elapsed > 0 else 0.0
        left = counts.total - counts.processed
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left > 0 else "ETA -" if left > 0 else "ETA 0 s"
        text = (
            f"progress: uploaded {counts.uploaded}/{counts.total}, processed {counts.processed}/{counts.total} "
            f"(failed {counts.failed}, cached {counts.cached})"
        )
        if not (unless_same and text == self._last_text):
            self.note(f"{text}, {rate:.1f} frames/s, {eta}")
            self._last_line, self._last_text = now, text


def reporter(console: Console, counts: Counts, every: float) -> Reporter:
    """Bars when `console` is a terminal (rich also honours TERM=dumb, NO_COLOR, FORCE_COLOR), else plain lines."""
    if console.is_terminal and not console.is_dumb_terminal:
        return BarReporter(console, counts)
    return LineReporter(console.file, counts, every)
