"""The admin API's bodies for operator accounts and the audit log."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.identity.accounts import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, OperatorAccount
from app.services.identity.audit import AuditEntry

RoleName = Literal["admin", "inspector", "viewer"]


class OperatorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Lowercase letters, digits, '.', '_', '@' or '-'.")
    password: str = Field(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)
    role: RoleName


class OperatorUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    role: RoleName | None = None
    disabled: bool | None = Field(None, description="true refuses the account's next login and ends its sessions.")


class OperatorOut(BaseModel):
    name: str
    role: RoleName
    disabled: bool
    created_at: float
    disabled_at: float | None
    last_login_at: float | None

    @classmethod
    def of(cls, account: OperatorAccount) -> OperatorOut:
        return cls(
            name=account.name,
            role=account.role.value,
            disabled=not account.active,
            created_at=account.created_at,
            disabled_at=account.disabled_at,
            last_login_at=account.last_login_at,
        )


class OperatorList(BaseModel):
    operators: list[OperatorOut] = Field(description="By name; the built-in `admin` is not an account.")


class AuditEntryOut(BaseModel):
    entry_id: str
    at: float
    actor: str = Field(description="An operator's name, or `key:<key id>` for an admin key.")
    action: str
    target: str
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(**vars(entry))


class AuditList(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first.")
