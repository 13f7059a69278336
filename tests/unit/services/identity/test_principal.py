"""Scopes and principals: what a caller may do, and the answer when it may not."""

from __future__ import annotations

import pytest

from app.services.core.errors import ScopeRequired, ValidationFailed
from app.services.identity.principal import (
    LOCAL_PRINCIPAL,
    Principal,
    Scope,
    parse_scopes,
    require_scope,
    require_tenant,
)


def key_principal(*scopes: Scope) -> Principal:
    return Principal(tenant="fleet-a", key_id="abcd1234", scopes=frozenset(scopes))


def test_a_missing_scope_is_403_scope_required_naming_the_scope() -> None:
    with pytest.raises(ScopeRequired) as raised:
        require_scope(key_principal(Scope.DETECT), Scope.MAP_READ)
    assert raised.value.status == 403 and raised.value.code == "SCOPE_REQUIRED"
    assert raised.value.details == {"scope": "map:read"} and "map:read" in raised.value.message


def test_a_granted_scope_passes() -> None:
    require_scope(key_principal(Scope.DETECT, Scope.JOBS), Scope.JOBS)


def test_admin_implies_every_scope() -> None:
    admin = key_principal(Scope.ADMIN)
    for scope in Scope:
        require_scope(admin, scope)


def test_the_local_principal_has_every_scope_but_admin() -> None:
    assert LOCAL_PRINCIPAL.tenant == "local" and LOCAL_PRINCIPAL.key_id is None
    for scope in (Scope.DETECT, Scope.JOBS, Scope.MAP_READ):
        require_scope(LOCAL_PRINCIPAL, scope)
    with pytest.raises(ScopeRequired):
        require_scope(LOCAL_PRINCIPAL, Scope.ADMIN)


def test_scope_names_parse_and_unknown_or_no_scopes_are_refused() -> None:
    assert parse_scopes(["detect", "map:read"]) == {Scope.DETECT, Scope.MAP_READ}
    with pytest.raises(ValidationFailed) as raised:
        parse_scopes(["detect", "map:write"])
    assert raised.value.details["field"] == "scopes"
    with pytest.raises(ValidationFailed):
        parse_scopes([])


@pytest.mark.parametrize("tenant", ["", "a b", "x" * 65, "fleet{a}", "a:b"])
def test_a_tenant_that_cannot_be_a_key_part_is_refused(tenant: str) -> None:
    with pytest.raises(ValidationFailed):
        require_tenant(tenant)


def test_a_tenant_name_like_a_fleet_name_is_accepted() -> None:
    assert require_tenant("acme_roads.eu-1") == "acme_roads.eu-1"
