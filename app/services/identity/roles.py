"""Who an operator is and what their role lets them do: one value the admin API and the control center pass on to
the audit log, so every action names its operator."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.services.core.errors import RoleRequired

ADMIN_USER = "admin"  # the built-in operator (ADMIN_PASSWORD(_HASH), ADMIN_TOKEN): a fresh `make run` has only it


class Role(StrEnum):
    ADMIN = "admin"  # everything
    INSPECTOR = "inspector"  # verdicts on hazards, read-only elsewhere
    VIEWER = "viewer"  # read-only


# Each role can do what the ones below it can: an admin may give a verdict, an inspector may read.
RANK = {Role.VIEWER: 0, Role.INSPECTOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


BUILT_IN_OPERATOR = Operator(ADMIN_USER, Role.ADMIN)


def require_operator_role(operator: Operator, role: Role) -> None:
    """403 ROLE_REQUIRED naming the role, so an operator knows whom to ask."""
    if not operator.can(role):
        raise RoleRequired(
            f"This needs the '{role.value}' role; '{operator.name}' has '{operator.role.value}'.",
            details={"role": role.value, "operator_role": operator.role.value},
        )
