"""Identifiers that travel into keys, file names and public ids: one rule for what is safe."""

from __future__ import annotations

import re

# No path separators, no leading dot, bounded length: safe as a Redis key part, a file name, a Cloudinary public id.
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}$")
