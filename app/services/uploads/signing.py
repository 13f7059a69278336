"""Signed URLs of the frames the service stores itself (`/media/<media id>.jpg`): with AUTH_MODE=keys a bare media
id is no credential, a URL the service handed out is, until it expires. An <img>, a map popup or an exported feed
shows the photo without a key.

`?expires=<unix seconds>&sig=<hex>`: HMAC-SHA-256 over `<name>\n<expires>` with a key derived from the API key
pepper (the same on every replica). Any valid signature grants access to that one file: the signature is the
tenant check, made when the URL was handed to a caller allowed to read it. URLs of other stores (Cloudinary's)
pass through unchanged. With AUTH_MODE=off nothing is signed or required (as before).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import urlencode

from app.services.uploads.stores import MEDIA_PREFIX

MEDIA_KEY_LABEL = b"hazard-api media url v1"


class MediaSigner:
    def __init__(self, pepper: bytes, seconds: int, *, required: bool, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(pepper, MEDIA_KEY_LABEL, hashlib.sha256).digest()  # never the pepper itself
        self.seconds = seconds
        self.required = required
        self._clock = clock

    def _signature(self, name: str, expires: int) -> str:
        return hmac.new(self._key, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, url: str | None) -> str | None:
        """`url` with an expiring signature when it is one of this service's media URLs (and signing is on)."""
        prefix = f"{MEDIA_PREFIX}/"
        if url is None or not self.required or not url.startswith(prefix) or "?" in url:
            return url
        name = url[len(prefix) :]
        expires = int(self._clock()) + self.seconds
        return f"{url}?{urlencode({'expires': expires, 'sig': self._signature(name, expires)})}"

    def allows(self, name: str, expires: str | None, signature: str | None) -> bool:
        """Whether the file `name` may be served: signing off, or a valid signature that has not expired."""
        if not self.required:
            return True
        if expires is None or signature is None or not expires.isdigit() or len(expires) > 12:
            return False
        if int(expires) < self._clock():
            return False
        return hmac.compare_digest(self._signature(name, int(expires)), signature.lower())
