"""The one way the service writes a file: whole or not at all, and on disk before it is renamed into place."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a unique dot-named temporary beside `path`, fsync, rename. A failed write leaves no temporary.

    fsync always: a stored frame or a spool entry that a crash turns into an empty file is worse than the
    fraction of a millisecond it costs on these (background) paths. The unique name lets two writers of one
    path (a shutdown spooling a frame a cancelled thread is still writing) never share a temporary.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
