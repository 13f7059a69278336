"""The control center's identity pages: API keys (any operator reads; admins create, the key shown once, and
revoke), operator accounts (admins only) and the audit log. Every change is recorded with the operator's name."""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to the `add_*` functions,
# and FastAPI can only resolve string annotations against module globals.
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from app.http.control_center.fragments import OperatorCheck
from app.http.control_center.presenters import page_context
from app.http.control_center.rendering import render
from app.services.core.errors import ApiError, ValidationFailed
from app.services.identity.accounts import OperatorAccount, OperatorAccounts, require_role
from app.services.identity.audit import AuditLog
from app.services.identity.key_records import CreatedKey
from app.services.identity.keys import KeyStore
from app.services.identity.limits import KeyLimits
from app.services.identity.operator_sessions import OperatorSession
from app.services.identity.principal import SCOPE_NAMES, parse_scopes
from app.services.identity.roles import Role

AUDIT_SHOWN = 100
OPERATOR_CHANGES = ["disable", "enable", "role"]
SECONDS_PER_DAY = 86_400
LIMIT_FIELDS = {"frames_per_second": float, "sessions_per_minute": float, "jobs_in_flight": int}


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def form_number(form: FormData, name: str, kind: type[float] | type[int]) -> float | int | None:
    text = form_text(form, name)
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValidationFailed(f"{name} must be a number.", details={"field": name}) from None


async def create_key_from_form(keys: KeyStore, form: FormData, now: float) -> CreatedKey:
    days = form_number(form, "expires_days", float)
    limits = {name: number for name, kind in LIMIT_FIELDS.items() if (number := form_number(form, name, kind))}
    scopes = [value for value in form.getlist("scopes") if isinstance(value, str)]
    return await keys.create(
        name=form_text(form, "name"),
        tenant=form_text(form, "tenant"),
        scopes=parse_scopes(scopes),
        expires_at=now + days * SECONDS_PER_DAY if days is not None else None,
        limits=KeyLimits.from_json(limits),
    )


async def attempt(action: Awaitable[Any], done: str, failed: str) -> tuple[Any, dict[str, Any], int]:
    """What an action returned, the panel's flash message and the fragment's status (a refusal is shown in the
    panel beside the form, not as an error page)."""
    try:
        result = await action
    except ApiError as exc:
        return None, {"error": exc, "message": failed}, exc.status
    return result, {"message": done}, 200


def add_identity_pages(
    router: APIRouter,
    keys: KeyStore,
    accounts: OperatorAccounts,
    audit: AuditLog,
    checks: tuple[OperatorCheck, OperatorCheck, OperatorCheck],
    clock: Callable[[], float] = time.time,
) -> None:
    """`checks`: any signed-in operator, an admin's page, an admin's checked POST."""
    operator, admin_page, admin_post = checks
    add_key_pages(router, keys, audit, operator, admin_post, clock)
    add_operator_pages(router, accounts, audit, admin_page, admin_post)

    @router.get("/audit")
    async def audit_page(request: Request, session: Annotated[OperatorSession, Depends(operator)]) -> HTMLResponse:
        context = page_context(session, "audit", entries=await audit.latest(AUDIT_SHOWN))
        return render(request, "audit.html", context)


def add_key_pages(
    router: APIRouter,
    keys: KeyStore,
    audit: AuditLog,
    operator: OperatorCheck,
    admin_post: OperatorCheck,
    clock: Callable[[], float],
) -> None:
    Operator = Annotated[OperatorSession, Depends(operator)]
    AdminPost = Annotated[OperatorSession, Depends(admin_post)]

    async def keys_context(session: OperatorSession, **extra: Any) -> dict[str, Any]:
        context = {"keys": await keys.list_keys(), "now": clock(), "scope_names": sorted(SCOPE_NAMES), **extra}
        return {"csrf_token": session.csrf_token, "can_change": session.role is Role.ADMIN, **context}

    @router.get("/keys")
    async def keys_page(request: Request, session: Operator) -> HTMLResponse:
        context = page_context(session, "keys", **await keys_context(session))
        return render(request, "keys.html", context)

    @router.post("/keys")
    async def create_key(request: Request, session: AdminPost) -> HTMLResponse:
        action = create_key_from_form(keys, await request.form(), clock())
        created, flash, status = await attempt(action, "Key created.", "Creating the key failed")
        if created is not None:
            details = {"name": created.record.name, "tenant": created.record.tenant}
            await audit.record(session.operator, "api_key.created", created.record.key_id, details)
        context = await keys_context(session, flash=flash, created=created)
        return render(request, "partials/keys.html", context, status)

    @router.post("/keys/{key_id}/revoke")
    async def revoke_key(request: Request, key_id: str, session: AdminPost) -> HTMLResponse:
        revoked, flash, status = await attempt(keys.revoke(key_id), f"Key {key_id} revoked.", "Revoking failed")
        if revoked is not None:
            await audit.record(session.operator, "api_key.revoked", key_id, {"tenant": revoked.tenant})
        return render(request, "partials/keys.html", await keys_context(session, flash=flash), status)


def add_operator_pages(
    router: APIRouter, accounts: OperatorAccounts, audit: AuditLog, admin_page: OperatorCheck, admin_post: OperatorCheck
) -> None:
    AdminPage = Annotated[OperatorSession, Depends(admin_page)]
    AdminPost = Annotated[OperatorSession, Depends(admin_post)]

    async def operators_context(session: OperatorSession, **extra: Any) -> dict[str, Any]:
        roles = [role.value for role in Role]
        return {"csrf_token": session.csrf_token, "accounts": await accounts.list_accounts(), "roles": roles, **extra}

    @router.get("/operators")
    async def operators_page(request: Request, session: AdminPage) -> HTMLResponse:
        context = page_context(session, "operators", **await operators_context(session))
        return render(request, "operators.html", context)

    @router.post("/operators")
    async def create_operator(request: Request, session: AdminPost) -> HTMLResponse:
        form = await request.form()
        name, password = form_text(form, "name"), form.get("password")

        async def create() -> OperatorAccount:
            role = require_role(form_text(form, "role"))
            return await accounts.create(name, password if isinstance(password, str) else "", role)

        account, flash, status = await attempt(create(), f"Operator {name} created.", "Creating the operator failed")
        if account is not None:
            await audit.record(session.operator, "operator.created", account.name, {"role": account.role.value})
        return render(request, "partials/operators.html", await operators_context(session, flash=flash), status)

    @router.post("/operators/{name}/{change}")
    async def change_operator(request: Request, name: str, change: str, session: AdminPost) -> HTMLResponse:
        role = form_text(await request.form(), "role")

        async def apply() -> OperatorAccount:
            if change == "role":
                return await accounts.set_role(name, require_role(role))
            if change in ("disable", "enable"):
                return await (accounts.disable if change == "disable" else accounts.enable)(name)
            raise ValidationFailed("No such change.", details={"change": change, "accepted": OPERATOR_CHANGES})

        account, flash, status = await attempt(apply(), f"Operator {name}: {change} done.", "Change failed")
        if account is not None:
            details = {"role": account.role.value, "disabled": not account.active}
            await audit.record(session.operator, "operator.changed", account.name, details)
        return render(request, "partials/operators.html", await operators_context(session, flash=flash), status)
