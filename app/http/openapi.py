"""What the OpenAPI document says beyond the routes' signatures: their error answers and operation ids.

Each route names the errors (classes of `app/services/core/errors.py`) it can answer; `error_responses` turns them
into FastAPI's `responses=`: per status the one error schema, the codes that status carries, an example of each,
and `Retry-After` where it is sent. `DocumentedAPI` makes sure of the rest for routes declared without it: 422 is
always ours (FastAPI's `HTTPValidationError` never appears), 500 is on every route, and every route that takes an
API key (its operation has `security`, from `app/http/auth.py`'s dependencies) documents the key check's answers
(401, 403, 429, 503). With AUTH_MODE=off a key is optional: such operations also list the empty requirement `{}`.
Operation ids are the endpoint functions' names.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.constants import REF_PREFIX
from fastapi.routing import APIRoute, iter_route_contexts

from app.http.auth import AUTH_ERRORS, SECURITY_SCHEMES, requires_api_key
from app.http.schemas.errors import ErrorResponse
from app.services.core.errors import ApiError, PayloadTooLarge, RequestTimeout, ValidationFailed

RETRY_AFTER_STATUSES = frozenset({429, 503})
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again (sent with RATE_LIMITED, OVERLOADED, "
    "SESSION_STORE_UNAVAILABLE and SHUTTING_DOWN).",
    "schema": {"type": "integer", "minimum": 1},
}
REQUEST_ID_HEADER = {
    "description": "The request's id: the client's X-Request-ID when it sent a usable one, else a new one.",
    "schema": {"type": "string"},
}
ERROR_SCHEMA = "ErrorResponse"
EXAMPLE_REQUEST_ID = "6f1c2b7e0a9d4c3f8e5b1a2d3c4e5f60"

# What any route that takes parameters or a JSON body can answer before its code runs.
REQUEST_ERRORS: tuple[type[ApiError], ...] = (ValidationFailed,)
# A route that reads a body can also time out reading it (REQUEST_BODY_TIMEOUT_SECONDS).
JSON_BODY_ERRORS: tuple[type[ApiError], ...] = (PayloadTooLarge, RequestTimeout, ValidationFailed)


def error_responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer `errors` (500 INTERNAL_ERROR is added to every route)."""
    by_status: dict[int, list[type[ApiError]]] = defaultdict(list)
    every: tuple[type[ApiError], ...] = (*errors, ApiError)
    for error in every:
        if error not in by_status[error.status]:
            by_status[error.status].append(error)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, classes in sorted(by_status.items()):
        headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID_HEADER}
        if status in RETRY_AFTER_STATUSES:
            headers["Retry-After"] = RETRY_AFTER_HEADER
        responses[status] = {
            "model": ErrorResponse,
            "description": "; ".join(f"`{error.code}`: {error.message}" for error in classes),
            "headers": headers,
            "content": {"application/json": {"examples": {error.code: _example(error) for error in classes}}},
        }
    return responses


def _example(error: type[ApiError]) -> dict[str, Any]:
    body = {"code": error.code, "message": error.message, "details": {}, "request_id": EXAMPLE_REQUEST_ID}
    return {"summary": error.message, "value": {"error": body}}


def operation_id(route: APIRoute) -> str:
    """The endpoint function's name (`create_session`, `detect_frame`, ...): what generated clients call it."""
    return route.name


class DocumentedAPI(FastAPI):
    """FastAPI whose OpenAPI document uses the one error shape on every route, however the route was declared:
    FastAPI's default 422 (`HTTPValidationError`) becomes ours and every operation documents 500.
    `key_optional` (AUTH_MODE=off): callers without a key are served, and the document says so."""

    def __init__(self, *, key_optional: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.key_optional = key_optional

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = _one_error_shape(super().openapi())
            self.openapi_schema = _document_key_check(schema, self._keyed_operations(), self.key_optional)
        return self.openapi_schema

    def _keyed_operations(self) -> set[tuple[str, str]]:
        """(path, method) of every documented route that takes an API key."""
        keyed: set[tuple[str, str]] = set()
        for context in iter_route_contexts(self.routes):
            route = context.original_route
            if isinstance(route, APIRoute) and route.include_in_schema and requires_api_key(route):
                keyed |= {(str(context.path), method.lower()) for method in route.methods or ()}
        return keyed


def _document_key_check(schema: dict[str, Any], keyed: set[tuple[str, str]], key_optional: bool) -> dict[str, Any]:
    if keyed:
        schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    requirement: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
    requirement += [{}] if key_optional else []
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            if (path, method) in keyed:
                operation["security"] = [dict(choice) for choice in requirement]
                _add_errors(operation.setdefault("responses", {}), AUTH_ERRORS)
    return schema


def _add_errors(responses: dict[str, Any], errors: tuple[type[ApiError], ...]) -> None:
    """Each error's example under its status, beside what the route documents already (a status answered with
    something else than the error shape, e.g. a probe's own report, is left as it is)."""
    for error in errors:
        status = str(error.status)
        if status not in responses:
            responses[status] = _openapi_response(error)
            continue
        content = responses[status].get("content", {}).get("application/json", {})
        examples = content.get("examples")
        if content.get("schema") != {"$ref": REF_PREFIX + ERROR_SCHEMA} or examples is None:
            continue
        examples.setdefault(error.code, _example(error))  # a code the route answers already keeps its example
        responses[status]["description"] += f"; `{error.code}`: {error.message}"


def _one_error_shape(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if ERROR_SCHEMA not in components:
        error_schema = ErrorResponse.model_json_schema(ref_template=REF_PREFIX + "{model}")
        components.update(error_schema.pop("$defs", {}))
        components[ERROR_SCHEMA] = error_schema
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if default_422.get("$ref") == REF_PREFIX + "HTTPValidationError":
                responses["422"] = _openapi_response(ValidationFailed)
            responses.setdefault("500", _openapi_response(ApiError))
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def _openapi_response(error: type[ApiError]) -> dict[str, Any]:
    """What `error_responses(error)` becomes in the document, for operations built without it."""
    response = {key: value for key, value in error_responses(error)[error.status].items() if key != "model"}
    response["content"]["application/json"]["schema"] = {"$ref": REF_PREFIX + ERROR_SCHEMA}
    return response
