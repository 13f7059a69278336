"""Who is calling, as one value the routes and services pass around: a key's tenant and scopes, or an operator.

With AUTH_MODE=off an anonymous caller is `LOCAL_PRINCIPAL`: one tenant (`local`) with every scope but admin,
so a fresh `make run` works while key management still needs an operator or an admin key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from app.services.core.errors import ScopeRequired, ValidationFailed
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.limits import KeyLimits

LOCAL_TENANT = "local"
# A tenant names a fleet or customer and becomes part of Redis keys and filters: the deployment's name rule.
TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Scope(StrEnum):
    DETECT = "detect"  # open sessions, send frames, read its own sessions
    JOBS = "jobs"  # create, read, cancel its own jobs
    MAP_READ = "map:read"  # its tenant's hazard map and exports
    ADMIN = "admin"  # everything, key management included


ALL_SCOPES = frozenset(Scope)
NON_ADMIN_SCOPES = frozenset(scope for scope in Scope if scope is not Scope.ADMIN)
SCOPE_NAMES = frozenset(scope.value for scope in Scope)


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scope names from a request or Redis; an unknown name is refused rather than dropped (a typo would
    otherwise make a key silently weaker than its admin meant)."""
    names = list(names)
    unknown = sorted({name for name in names if name not in SCOPE_NAMES})
    if unknown:
        raise ValidationFailed(
            f"Unknown scopes: {', '.join(unknown)}.", details={"field": "scopes", "allowed": sorted(ALL_SCOPES)}
        )
    if not names:
        raise ValidationFailed("A key needs at least one scope.", details={"field": "scopes"})
    return frozenset(Scope(name) for name in names)


def require_tenant(tenant: str) -> str:
    if not TENANT.fullmatch(tenant):
        raise ValidationFailed("tenant must be 1-64 letters, digits, '.', '_' or '-'.", details={"field": "tenant"})
    return tenant


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str | None
    scopes: frozenset[Scope]
    limits: KeyLimits = field(default_factory=KeyLimits)
    device_profile: DeviceProfile | None = None
    operator: str | None = None  # an operator account's name: operators act across tenants

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


def require_scope(principal: Principal, scope: Scope) -> None:
    """403 SCOPE_REQUIRED naming the scope, so a client's developer knows which key to ask for."""
    if not principal.allows(scope):
        raise ScopeRequired(f"This needs an API key with the '{scope.value}' scope.", details={"scope": scope.value})


LOCAL_PRINCIPAL = Principal(tenant=LOCAL_TENANT, key_id=None, scopes=NON_ADMIN_SCOPES)
