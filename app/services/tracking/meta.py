"""Where and when a frame was taken, as a client states it: query parameters or multipart fields, validated here
once so that both say the same thing when a value is wrong (422 VALIDATION_ERROR naming the field)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from app.services.core.errors import ValidationFailed
from app.services.tracking.types import FrameMeta

# Inclusive ranges of the numeric fields: WGS-84 degrees, compass degrees, metres per second.
RANGES: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "heading": (0.0, 360.0),
    "speed_mps": (0.0, 150.0),
}
FIELDS = (*RANGES, "captured_at")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: str) -> float:
    """Epoch seconds of an RFC 3339 date-time (an offset is required; a leap second counts as :59.999999)."""
    match = RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2025-05-01T09:30:00Z")
    text = value.strip().replace("t", "T").replace("z", "Z").replace(" ", "T")
    if match.group(1) == "60":  # leap second: the instant just before the next minute
        text = text[: match.start(1)] + "59.999999" + text[match.end(2 if match.group(2) else 1) :]
    return datetime.fromisoformat(text).timestamp()


def _problem(where: str, field: str, message: str, kind: str) -> dict[str, Any]:
    return {"location": [where, field], "message": message, "type": kind}


def frame_meta(query: Mapping[str, float | str | None], form: Mapping[str, str]) -> FrameMeta:
    """The frame's metadata from query values (numbers already range-checked by the route) and multipart fields
    (strings); a field may come either way, not both. Latitude and longitude come together or not at all."""
    problems: list[dict[str, Any]] = []
    values: dict[str, float] = {}
    wheres: dict[str, str] = {}
    for field in FIELDS:
        given_query, given_form = query.get(field), form.get(field)
        if given_query is not None and given_form is not None:
            problems.append(
                _problem("body", field, "given both as a query parameter and a multipart field", "duplicate")
            )
            continue
        raw, where = (given_query, "query") if given_query is not None else (given_form, "body")
        if raw is None:
            continue
        wheres[field] = where
        try:
            values[field] = _value(field, raw)
        except ValueError as exc:
            problems.append(_problem(where, field, str(exc), "value_error"))
    located = [field for field in ("lat", "lon") if field in values or field in wheres]
    if len(located) == 1:
        missing = "lon" if located[0] == "lat" else "lat"
        problems.append(_problem(wheres[located[0]], missing, "lat and lon must be given together", "missing"))
    if problems:
        raise ValidationFailed(details={"errors": problems})
    return FrameMeta(
        lat=values.get("lat"),
        lon=values.get("lon"),
        heading=values.get("heading"),
        speed_mps=values.get("speed_mps"),
        captured_at=values.get("captured_at"),
    )


def _value(field: str, raw: float | str) -> float:
    if field == "captured_at":
        if not isinstance(raw, str):
            raise ValueError("must be an RFC 3339 date-time")
        return parse_rfc3339(raw)
    try:
        number = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    low, high = RANGES[field]
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"must be between {low:g} and {high:g}")
    return number
