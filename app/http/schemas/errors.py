"""The one error shape every route answers with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: SESSION_NOT_FOUND, RATE_LIMITED, ... (see the README).")
    message: str = Field(description="For people; may change between versions.")
    details: dict[str, Any] = Field(description="What the code needs to be acted on, e.g. the accepted media types.")
    request_id: str = Field(description="Also the X-Request-ID header; the log lines of this request carry it.")


class ErrorResponse(BaseModel):
    """Every error, from every route, has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "SESSION_NOT_FOUND",
                        "message": "No such session, or it has expired.",
                        "details": {"session_id": "k3VbE2Jw4oKq5mSx0yPdLr8TfHn1aC7u"},
                        "request_id": "6f1c2b7e0a9d4c3f8e5b1a2d3c4e5f60",
                    }
                }
            ]
        }
    )

    error: ErrorBody
