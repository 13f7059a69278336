"""The admin API for operator accounts (admin role only) and the audit log (any operator may read it).

Every change to an account is recorded with the name of the operator who made it.
"""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to the factory, and
# FastAPI can only resolve string annotations against module globals.
from typing import Annotated

from fastapi import APIRouter, Query

from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.admin import AUTH_ERRORS, CHANGE_ERRORS
from app.http.routers.deps import operator_dependency, role_dependency
from app.http.schemas.operators import (
    AuditEntryOut,
    AuditList,
    OperatorCreate,
    OperatorList,
    OperatorOut,
    OperatorUpdate,
)
from app.services.core.errors import (
    IdentityStoreUnavailable,
    OperatorAccountExists,
    OperatorAccountNotFound,
)
from app.services.identity.accounts import OperatorAccounts, require_role
from app.services.identity.audit import MAX_READ, AuditLog
from app.services.identity.operators import OperatorAuth
from app.services.identity.roles import Operator, Role

ADMIN_READ_ERRORS = (*REQUEST_ERRORS, *CHANGE_ERRORS, IdentityStoreUnavailable)
WRITE_ERRORS = (*JSON_BODY_ERRORS, *CHANGE_ERRORS, IdentityStoreUnavailable)


def create_operators_router(
    accounts: OperatorAccounts, audit: AuditLog, auth: OperatorAuth, client_address: ClientAddress
) -> APIRouter:
    operator = operator_dependency(auth, client_address)
    Reader = Annotated[Operator, operator]
    Admin = Annotated[Operator, role_dependency(operator, Role.ADMIN)]
    router = APIRouter(prefix="/admin/api", tags=["admin"])

    @router.post("/operators", status_code=201, responses=error_responses(*WRITE_ERRORS, OperatorAccountExists))
    async def admin_create_operator(body: OperatorCreate, who: Admin) -> OperatorOut:
        account = await accounts.create(body.name, body.password, require_role(body.role))
        await audit.record(who.name, "operator.created", account.name, {"role": account.role.value})
        return OperatorOut.of(account)

    @router.get("/operators", responses=error_responses(*ADMIN_READ_ERRORS))
    async def admin_list_operators(_: Admin) -> OperatorList:
        return OperatorList(operators=[OperatorOut.of(account) for account in await accounts.list_accounts()])

    @router.patch("/operators/{name}", responses=error_responses(*WRITE_ERRORS, OperatorAccountNotFound))
    async def admin_update_operator(name: str, body: OperatorUpdate, who: Admin) -> OperatorOut:
        account = await accounts.get(name)  # 404 before anything changes
        changes: dict[str, object] = {}
        if body.role is not None:
            account = await accounts.set_role(account.name, require_role(body.role))
            changes["role"] = body.role
        if body.disabled is not None:
            account = await (accounts.disable if body.disabled else accounts.enable)(account.name)
            changes["disabled"] = body.disabled
        await audit.record(who.name, "operator.changed", account.name, changes)
        return OperatorOut.of(account)

    @router.get("/audit", responses=error_responses(*REQUEST_ERRORS, *AUTH_ERRORS, IdentityStoreUnavailable))
    async def admin_audit(_: Reader, limit: Annotated[int, Query(ge=1, le=MAX_READ)] = 50) -> AuditList:
        return AuditList(entries=[AuditEntryOut.of(entry) for entry in await audit.latest(limit)])

    return router
