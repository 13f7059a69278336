"""The pepper of the API key digests: from the environment in production, else generated once and kept on disk.

Kept on disk, not made per process: a key created on `make run` must still verify after a restart.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from app.services.identity.key_format import MIN_PEPPER_BYTES, check_pepper


def load_pepper(configured: str | None, file: Path) -> bytes:
    """API_KEY_PEPPER when set; else the file's, written on first use (0600, created exclusively: two processes
    starting at once end up with the same one)."""
    if configured is not None:
        return check_pepper(configured.encode())
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process wrote it first: read theirs
        else:
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(MIN_PEPPER_BYTES))
    return check_pepper(file.read_text().strip().encode())
