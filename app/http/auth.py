"""Who is calling: the one API key check of the HTTP routes (and of the WebSocket stream to come).

The core (`KeyCheck.principal`) takes headers, the client's address and whether the request came over TLS, not a
Request, so a WebSocket handshake goes through the very same check. A key is sent as `Authorization: Bearer
<key>` or `X-API-Key: <key>`. With AUTH_MODE=off a caller without a key is `LOCAL_PRINCIPAL`; a key that is sent
is checked and applied in either mode. Routes declare what they need as a parameter type, declared once here
(FastAPI full-stack template style): `caller: DetectCaller` is a verified principal holding the `detect` scope.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, cast

import structlog
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from app.http.client_address import ClientAddress
from app.http.routers.deps import presented_credentials
from app.services.core.errors import (
    ApiError,
    AuthRequired,
    IdentityStoreUnavailable,
    InvalidApiKey,
    KeyAttemptsLimited,
    ScopeRequired,
    TlsRequired,
    Unauthorized,
)
from app.services.identity.attempts import FailedKeyAttempts
from app.services.identity.key_format import KEY_PREFIX
from app.services.identity.keys import KeyStore
from app.services.identity.operators import ADMIN_USER, OperatorAuth
from app.services.identity.principal import ALL_SCOPES, LOCAL_PRINCIPAL, LOCAL_TENANT, Principal, Scope, require_scope

API_KEY_HEADER = "X-API-Key"
# What a route that needs a key can answer before its own code runs (documented on each: app/http/openapi.py).
AUTH_ERRORS: tuple[type[ApiError], ...] = (
    AuthRequired,
    InvalidApiKey,
    ScopeRequired,
    TlsRequired,
    KeyAttemptsLimited,
    IdentityStoreUnavailable,
)
# The OpenAPI document's two ways of sending a key, named in the `security` of every route that takes one.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key: `Bearer hzk_...`."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER, "description": "An API key."},
}
TAKES_API_KEY = "takes_api_key"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request sends: `X-API-Key`, else a Bearer credential; None when it sends neither. Names are
    looked up in lower case: Starlette's headers ignore case, a plain mapping (a WebSocket's) must be lower."""
    key = headers.get(API_KEY_HEADER.lower(), "").strip()
    if key:
        return key
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def presents_operator_credentials(headers: Mapping[str, str]) -> bool:
    """Basic credentials, or a Bearer credential not shaped like an API key (the operators' ADMIN_TOKEN), and no
    `X-API-Key`: what the operators' login checks, so it never counts as a failed key attempt."""
    if headers.get(API_KEY_HEADER.lower()):
        return False
    scheme, _, value = headers.get("authorization", "").partition(" ")
    bearer = scheme.lower() == "bearer" and bool(value.strip()) and not value.strip().startswith(KEY_PREFIX)
    return bearer or scheme.lower() == "basic"


def owned_by(caller: Principal) -> str | None:
    """The tenant whose sessions and jobs `caller` may name; None: every tenant's (an admin key, an operator)."""
    return None if caller.operator is not None or Scope.ADMIN in caller.scopes else caller.tenant


class KeyCheck:
    """`require_tls` (production): a key that did not come over HTTPS is refused before it is even looked up."""

    def __init__(
        self,
        keys: KeyStore,
        attempts: FailedKeyAttempts,
        client_address: ClientAddress,
        *,
        mode: Literal["off", "keys"],
        require_tls: bool,
    ) -> None:
        self._keys = keys
        self._attempts = attempts
        self.client_address = client_address
        self.mode = mode
        self._require_tls = require_tls

    async def principal(self, headers: Mapping[str, str], address: str, *, over_tls: bool) -> Principal:
        """The caller: its key's principal, LOCAL_PRINCIPAL (no key, AUTH_MODE=off), or 401/403/429. Unknown,
        revoked, expired and malformed keys are one INVALID_API_KEY; each failure counts against `address`."""
        presented = presented_key(headers)
        if presented is None:
            if self.mode == "off":
                return LOCAL_PRINCIPAL
            raise AuthRequired()
        if self._require_tls and not over_tls:
            raise TlsRequired()
        try:
            principal = await self._keys.verify(presented)
        except InvalidApiKey:
            await self._attempts.count(address)  # 429 past API_KEY_FAILURES_PER_MINUTE
            raise
        structlog.contextvars.bind_contextvars(tenant=principal.tenant, key_id=principal.key_id)  # never the key
        return principal

    async def caller_of(self, connection: HTTPConnection, key: str | None = None) -> Principal:
        """The caller of `connection`, by the key in its headers, or by `key` (a stream's first message: browsers
        cannot set headers on a WebSocket upgrade), checked exactly as a header's."""
        over_tls = self.client_address.arrived_over_tls(connection) if self._require_tls else True
        headers = connection.headers if key is None else {API_KEY_HEADER.lower(): key}
        return await self.principal(headers, self.client_address.of(connection), over_tls=over_tls)


def key_check_of(connection: HTTPConnection) -> KeyCheck:
    """The app's one KeyCheck, set in create_app: dependency aliases are declared at import, before any app."""
    return cast(KeyCheck, connection.app.state.key_check)


def takes_api_key(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a dependency that reads an API key: the OpenAPI document gives its routes `security` and the key
    check's errors (`app/http/openapi.py`), so no dependency runs per request only to say so."""
    setattr(dependency, TAKES_API_KEY, True)
    return dependency


def requires_api_key(route: APIRoute) -> bool:
    """Whether one of `route`'s dependencies (its own, its router's, nested ones) reads an API key."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if getattr(dependant.call, TAKES_API_KEY, False):
            return True
        pending.extend(dependant.dependencies)
    return False


@takes_api_key
async def current_caller(request: Request) -> Principal:
    return await key_check_of(request).caller_of(request)


Caller = Annotated[Principal, Depends(current_caller)]


def require(scope: Scope) -> Any:
    """A dependency: the caller, who must hold `scope` (or `admin`), else 403 SCOPE_REQUIRED naming it. One
    dependency per route, not a chain: each level FastAPI resolves costs the hot path a few microseconds."""

    async def scoped_caller(request: Request) -> Principal:
        caller = await key_check_of(request).caller_of(request)
        require_scope(caller, scope)
        return caller

    scoped_caller.__name__ = f"require_{scope.name.lower()}"
    return Depends(takes_api_key(scoped_caller))


DetectCaller = Annotated[Principal, require(Scope.DETECT)]
JobsCaller = Annotated[Principal, require(Scope.JOBS)]
MapCaller = Annotated[Principal, require(Scope.MAP_READ)]
OPERATOR_PRINCIPAL = Principal(tenant=LOCAL_TENANT, key_id=None, scopes=ALL_SCOPES, operator=ADMIN_USER)


def key_or_operator(auth: OperatorAuth) -> Any:
    """A dependency for operators' routes that keys may also use (/health/deep): a key of any scope, or an
    operator's credentials (Basic, or a Bearer that is not shaped like a key: ADMIN_TOKEN, with the operators'
    own failed-login throttle); without either, what any keyed route answers (AUTH_REQUIRED in keys mode)."""

    @takes_api_key
    async def key_or_operator_caller(request: Request) -> Principal:
        check = key_check_of(request)
        if presents_operator_credentials(request.headers):
            await auth.authenticate(presented_credentials(request), check.client_address.of(request))
            return OPERATOR_PRINCIPAL
        return await check.caller_of(request)

    return Depends(key_or_operator_caller)


def metrics_access(token: str | None) -> Any:
    """A dependency: with METRICS_TOKEN set, `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' own config);
    unset, /metrics is open (it carries no tenant's data, only counts)."""

    async def metrics_reader(request: Request) -> None:
        if token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise Unauthorized("Send `Authorization: Bearer <METRICS_TOKEN>`.")

    return Depends(metrics_reader)
