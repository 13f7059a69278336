"""What the process logs, read the way it is written."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logged_lines() -> Iterator[list[str]]:
    """The non-blank lines logged inside the block, rendered by the app's own formatter, filled in when it ends: read
    from a second handler beside the app's (stdout capture depends on which test configured logging last)."""
    root = logging.getLogger()
    written = io.StringIO()
    copy = logging.StreamHandler(written)
    copy.setFormatter(root.handlers[0].formatter)
    root.addHandler(copy)
    lines: list[str] = []
    try:
        yield lines
    finally:
        root.removeHandler(copy)
        lines.extend(line for line in written.getvalue().splitlines() if line.strip())
