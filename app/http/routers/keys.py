"""The admin API for API keys: make one (its text shown once), list, read, change limits or profile, revoke.

Reading needs an operator of any role; changing needs the admin role, and every change goes to the audit log
with the operator's name. No answer but the create answer carries the key, and nothing logs it.
"""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to the factory, and
# FastAPI can only resolve string annotations against module globals.
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query

from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.admin import AUTH_ERRORS, CHANGE_ERRORS
from app.http.routers.deps import operator_dependency, role_dependency
from app.http.schemas.keys import KeyCreate, KeyCreated, KeyList, KeyOut, KeyUpdate
from app.services.core.errors import ApiKeyNotFound, IdentityStoreUnavailable
from app.services.identity.audit import AuditLog
from app.services.identity.keys import KEEP, KeyStore
from app.services.identity.limits import KeyLimits
from app.services.identity.operators import OperatorAuth
from app.services.identity.principal import parse_scopes
from app.services.identity.roles import Operator, Role

READ_ERRORS = (*REQUEST_ERRORS, *AUTH_ERRORS, IdentityStoreUnavailable)
WRITE_ERRORS = (*JSON_BODY_ERRORS, *CHANGE_ERRORS, IdentityStoreUnavailable)


def create_keys_router(
    keys: KeyStore,
    audit: AuditLog,
    auth: OperatorAuth,
    client_address: ClientAddress,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    operator = operator_dependency(auth, client_address)
    Reader = Annotated[Operator, operator]
    Admin = Annotated[Operator, role_dependency(operator, Role.ADMIN)]
    router = APIRouter(prefix="/admin/api/keys", tags=["admin"])

    @router.post("", status_code=201, responses=error_responses(*WRITE_ERRORS))
    async def admin_create_key(body: KeyCreate, who: Admin) -> KeyCreated:
        created = await keys.create(
            name=body.name,
            tenant=body.tenant,
            scopes=parse_scopes(body.scopes),
            expires_at=body.expires_at,
            limits=body.limits.to_limits() if body.limits else None,
            device_profile=body.device_profile.to_profile() if body.device_profile else None,
        )
        record = created.record
        details = {"name": record.name, "tenant": record.tenant, "scopes": sorted(body.scopes)}
        await audit.record(who.name, "api_key.created", record.key_id, details)
        return KeyCreated.of(created, clock())

    @router.get("", responses=error_responses(*READ_ERRORS))
    async def admin_list_keys(
        _: Reader, tenant: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None
    ) -> KeyList:
        now = clock()
        return KeyList(keys=[KeyOut.of(record, now) for record in await keys.list_keys(tenant)])

    @router.get("/{key_id}", responses=error_responses(*READ_ERRORS, ApiKeyNotFound))
    async def admin_get_key(key_id: str, _: Reader) -> KeyOut:
        return KeyOut.of(await keys.get(key_id), clock())

    @router.patch("/{key_id}", responses=error_responses(*WRITE_ERRORS, ApiKeyNotFound))
    async def admin_update_key(key_id: str, body: KeyUpdate, who: Admin) -> KeyOut:
        sent = body.model_fields_set  # `null` is a value here (remove, or back to defaults), absent is not
        limits = body.limits.to_limits() if body.limits else KeyLimits()
        profile = body.device_profile.to_profile() if body.device_profile else None
        record = await keys.update(
            key_id,
            limits=limits if "limits" in sent else KEEP,
            device_profile=profile if "device_profile" in sent else KEEP,
        )
        await audit.record(who.name, "api_key.updated", key_id, {"fields": sorted(sent)})
        return KeyOut.of(record, clock())

    @router.delete("/{key_id}", responses=error_responses(*REQUEST_ERRORS, *CHANGE_ERRORS, ApiKeyNotFound))
    async def admin_revoke_key(key_id: str, who: Admin) -> KeyOut:
        record = await keys.revoke(key_id)
        await audit.record(who.name, "api_key.revoked", key_id, {"tenant": record.tenant})
        return KeyOut.of(record, clock())

    return router
