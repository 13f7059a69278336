"""JSON's own types for request bodies, as JSON Schema states them, and the one way times are answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator


def json_integer(value: object) -> object:
    """What JSON Schema calls an integer: pydantic's lax mode would also take `true` and `"3600"`."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


def json_number(value: object) -> object:
    """What JSON Schema calls a number: pydantic's lax mode would also take `true` and `"0.5"`."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


def json_string(value: object) -> object:
    """A JSON string (an RFC 3339 time): pydantic's lax mode would also read a number as epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


# JSON Schema's number and integer, as the spec states them: no booleans, no numbers in strings.
Number = Annotated[float, BeforeValidator(json_number)]
Integer = Annotated[int, BeforeValidator(json_integer)]


def utc_time(timestamp: float) -> datetime:
    """Epoch seconds as the aware UTC time every answer carries."""
    return datetime.fromtimestamp(timestamp, UTC)
