"""What Redis keeps of an API key: its public attributes and the HMAC of its secret, one hash per key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from app.services.core.errors import ValidationFailed
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.limits import KeyLimits
from app.services.identity.principal import Principal, Scope, parse_scopes
from app.services.identity.redis_io import float_text, optional_float

MAX_NAME_CHARS = 100


def require_key_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValidationFailed(f"name must be 1-{MAX_NAME_CHARS} printable characters.", details={"field": "name"})
    return name


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    name: str
    tenant: str
    scopes: frozenset[Scope]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)
    device_profile: DeviceProfile | None = None

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        return Principal(self.tenant, self.key_id, self.scopes, self.limits, self.device_profile)

    def to_fields(self, digest: str) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "digest": digest,
            "name": self.name,
            "tenant": self.tenant,
            "scopes": " ".join(sorted(self.scopes)),
            "created_at": float_text(self.created_at),
            "expires_at": float_text(self.expires_at),
            "revoked_at": float_text(self.revoked_at),
            "last_used_at": float_text(self.last_used_at),
            **limits_fields(self.limits),
            **profile_fields(self.device_profile),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ApiKeyRecord:
        profile = fields.get("device_profile")
        return cls(
            key_id=fields["key_id"],
            name=fields["name"],
            tenant=fields["tenant"],
            scopes=parse_scopes(fields["scopes"].split()),
            created_at=float(fields["created_at"]),
            expires_at=optional_float(fields.get("expires_at")),
            revoked_at=optional_float(fields.get("revoked_at")),
            last_used_at=optional_float(fields.get("last_used_at")),
            limits=KeyLimits.from_json(json.loads(fields.get("limits") or "{}")),
            device_profile=DeviceProfile.from_json(json.loads(profile)) if profile else None,
        )


def limits_fields(limits: KeyLimits) -> dict[str, str]:
    return {"limits": json.dumps(limits.to_json(), sort_keys=True)}


def profile_fields(profile: DeviceProfile | None) -> dict[str, str]:
    return {"device_profile": json.dumps(profile.to_json(), sort_keys=True) if profile else ""}


@dataclass(frozen=True)
class CreatedKey:
    """The one moment the plaintext key exists outside its owner: hand it over once, log only `record`."""

    key: str = field(repr=False)
    record: ApiKeyRecord
