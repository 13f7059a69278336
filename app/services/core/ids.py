"""Identifiers that travel into keys, file names and public ids: one rule for what is safe."""

from __future__ import annotations

import re

# No path separators, no leading dot, bounded length: safe as a Redis key part, a file name, a Cloudinary public id.
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}$")

# What `SessionStore.create` hands out (`secrets.token_urlsafe(24)`): anything else cannot name a session, and is
# refused before it reaches a Redis key (where `<id>:history` would name another session's list).
SESSION_ID_BYTES = 24
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
