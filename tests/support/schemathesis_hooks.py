"""Loaded by Schemathesis (`SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks`): what a schema-valid frame is.

The spec says a frame is a binary JPEG, PNG or WebP body (raw or the multipart field `file`); a JSON schema cannot
say "decodable", so without this the fuzzer sends random bytes, which the API rightly refuses (400 INVALID_IMAGE).
With it, positive cases carry real images of the declared type; negative cases still get random bytes.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from app.services.errors import ValidationFailed
from app.services.sessions.metadata import MetadataLimits, validate_metadata

SIZES = [(64, 48), (320, 180), (17, 31)]


def _images(fmt: str) -> list[bytes]:
    encoded = []
    for width, height in SIZES:
        image = Image.effect_noise((width, height), 64).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        encoded.append(buffer.getvalue())
    return encoded


for media_type, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP")):
    schemathesis.openapi.media_type(media_type, st.sampled_from(_images(fmt)))


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: object) -> bool:
    """Session metadata has limits JSON Schema cannot state (total bytes, depth, keys at every level): a body
    past them is rightly refused with 422, so it is not a schema-valid request to expect 2xx for."""
    if not (isinstance(body, dict) and isinstance(body.get("metadata"), dict)):
        return True
    try:
        validate_metadata(body["metadata"], MetadataLimits())
    except ValidationFailed:
        return False
    return True
