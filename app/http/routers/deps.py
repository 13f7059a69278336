"""Annotated dependencies shared by routers, declared once."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import Depends, Request

from app.http.client_address import ClientAddress
from app.services.identity.operators import ADMIN_USER, Credentials, OperatorAuth


def presented_credentials(request: Request) -> Credentials:
    """`Authorization: Bearer <ADMIN_TOKEN>` or `Basic admin:<password>`; anything else presents nothing."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return Credentials(token=value.strip())
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials()
        if user == ADMIN_USER:
            return Credentials(password=password)
    return Credentials()


def operator_dependency(auth: OperatorAuth, client_address: ClientAddress) -> Any:
    """A dependency that lets operators through and answers 401/429/503 to everyone else; failed logins are
    throttled per client address (the proxy-aware one, as on the control center's login form)."""

    async def require_operator(request: Request) -> str:
        await auth.authenticate(presented_credentials(request), client_address.of(request))
        return ADMIN_USER

    return Depends(require_operator)
