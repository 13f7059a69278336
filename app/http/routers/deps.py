"""Annotated dependencies shared by routers, declared once."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Depends, Request

from app.http.client_address import ClientAddress
from app.services.identity.operators import Credentials, OperatorAuth
from app.services.identity.roles import Operator, Role, require_operator_role

MAX_USER_CHARS = 1024


def presented_credentials(request: Request) -> Credentials:
    """`Authorization: Bearer <ADMIN_TOKEN>` or `Basic <user>:<password>`; anything else presents nothing."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return Credentials(token=value.strip())
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials()
        if user and len(user) <= MAX_USER_CHARS:
            return Credentials(password=password, user=user)
    return Credentials()


def operator_dependency(auth: OperatorAuth, client_address: ClientAddress) -> Any:
    """A dependency that answers who the operator is (any role) and 401/429/503 to everyone else; failed logins
    are throttled per client address (the proxy-aware one, as on the control center's login form)."""

    async def require_operator(request: Request) -> Operator:
        return await auth.authenticate(presented_credentials(request), client_address.of(request))

    return Depends(require_operator)


def role_dependency(operator: Any, role: Role) -> Any:
    """`operator` (from `operator_dependency`) with at least `role`, else 403 ROLE_REQUIRED. FastAPI runs the
    operator check once per request however many dependencies name it."""

    async def require_role(who: Operator = operator) -> Operator:
        require_operator_role(who, role)
        return who

    return Depends(require_role)
