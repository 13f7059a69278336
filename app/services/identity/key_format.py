"""The API key's text: `hzk_<key id>_<secret>`, and the one digest of its secret that Redis keeps.

The secret is 32 random bytes, so no one can guess it and a slow hash (argon2) would only cost every request
CPU for nothing: a slow hash protects low-entropy passwords against offline guessing, and these have 256 bits.
HMAC-SHA-256 with a server-side pepper (from the environment, never in Redis) means a copy of Redis alone can
neither reveal a key nor even test one. The key id is public (it shows in lists and logs); the secret never is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, field

KEY_PREFIX = "hzk_"
KEY_ID_CHARS = 8
# Lowercase letters and digits: no '_' (the separator) and no '-', so a key id is one word in every UI.
KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32
SECRET_CHARS = 43  # token_urlsafe(32): base64url of 32 bytes, unpadded
KEY_ID = re.compile(rf"^[a-z0-9]{{{KEY_ID_CHARS}}}$")
_KEY_TEXT = rf"{KEY_PREFIX}([a-z0-9]{{{KEY_ID_CHARS}}})_([A-Za-z0-9_-]{{{SECRET_CHARS}}})"
_KEY = re.compile(_KEY_TEXT)
_KEY_ANYWHERE = re.compile(_KEY_TEXT + r"(?![A-Za-z0-9_-])")
MAX_PRESENTED_CHARS = 256  # what is hashed of a malformed key: enough to cost what a real one costs, bounded
MIN_PEPPER_BYTES = 32


@dataclass(frozen=True)
class PresentedKey:
    key_id: str
    secret: str = field(repr=False)


def new_key_id() -> str:
    return "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_CHARS))


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(presented: str) -> PresentedKey | None:
    """The key id and secret of a well-formed key; None for anything else."""
    match = _KEY.fullmatch(presented)
    return PresentedKey(match[1], match[2]) if match else None


def check_pepper(pepper: bytes) -> bytes:
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the API key pepper must be at least {MIN_PEPPER_BYTES} bytes")
    return pepper


def secret_digest(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def redact_keys(text: str) -> str:
    """Text with every API key in it reduced to its public id: for anything that may be stored or logged."""
    return _KEY_ANYWHERE.sub(lambda match: f"{KEY_PREFIX}{match[1]}_***", text)
