"""The one error shape: {"error": {"code", "message", "details", "request_id"}} from every route."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.services.core.errors import CLIENT_DISCONNECTED, ApiError, ClientClosedRequest
from app.services.core.request_context import current_request_id

log = structlog.get_logger(__name__)

_HTTP_CODES = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}, "request_id": current_request_id()}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    structlog.contextvars.bind_contextvars(code=code)  # the access line then says which error was sent
    sent = dict(headers or {})
    if retry_after is not None:
        sent["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(error_body(code, message, details), status_code=status, headers=sent)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if isinstance(exc, ClientClosedRequest):
        structlog.contextvars.bind_contextvars(reason=CLIENT_DISCONNECTED)  # the access line says why: 499
    if exc.status >= 500:
        log.warning("request_failed", code=exc.code, status=exc.status, details=exc.details)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.retry_after)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"location": [str(part) for part in error["loc"]], "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return error_response(422, "VALIDATION_ERROR", "The request is not valid.", {"errors": problems})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # The framework's only 400: a body it could not parse (JSON that is not UTF-8, a broken multipart envelope).
        # For the contract that is an invalid request like any other (our own 400 is INVALID_IMAGE, an ApiError).
        details = {"reason": str(exc.detail)}
        return error_response(422, "VALIDATION_ERROR", "The request body could not be parsed.", details)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """The documented methods of the path: Starlette's 405 names only the first route's, and GET /jobs and
    POST /jobs are two routes of one path. Of the templates that match, the most literal wins (`/jobs/queue`,
    not `/jobs/{job_id}`), as routing does."""
    matching: dict[int, set[str]] = {}
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path):
            matching.setdefault(template.count("{"), set()).update(method.upper() for method in operations)
    methods = matching[min(matching)] if matching else set()
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Unexpected exceptions are shaped by RequestContextMiddleware, inside which the request id header is kept."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
