"""The admin API's bodies for API keys: what an admin sends to make or change one, and what is shown of it.

The key itself appears in `KeyCreated` only, the one answer that carries it; every later read shows its record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.identity.device_profile import DeviceProfile
from app.services.identity.key_records import MAX_NAME_CHARS, ApiKeyRecord, CreatedKey
from app.services.identity.limits import KeyLimits

ScopeName = Literal["detect", "jobs", "map:read", "admin"]
KeyStatus = Literal["active", "revoked", "expired"]


class KeyLimitsBody(BaseModel):
    """Absent means the deployment's default applies."""

    model_config = ConfigDict(extra="forbid")

    frames_per_second: float | None = Field(None, gt=0, le=1000)
    sessions_per_minute: float | None = Field(None, gt=0, le=10_000)
    jobs_in_flight: int | None = Field(None, ge=1, le=10_000)

    def to_limits(self) -> KeyLimits:
        return KeyLimits.from_json(self.model_dump(exclude_none=True))

    @classmethod
    def of(cls, limits: KeyLimits) -> KeyLimitsBody:
        return cls.model_validate(limits.to_json())


class DeviceProfileBody(BaseModel):
    """The camera of the devices that use the key, for projecting a detection onto the road."""

    model_config = ConfigDict(extra="forbid")

    height_m: float = Field(ge=0.2, le=10.0, description="Camera height above the road, metres.")
    pitch_deg: float = Field(ge=-30.0, le=90.0, description="Degrees below the horizon (90: straight down).")
    hfov_deg: float = Field(ge=10.0, le=179.0, description="Horizontal field of view, degrees.")
    mounting: str = Field("windshield", max_length=32, description="windshield, dashboard, roof, bumper, ...")

    def to_profile(self) -> DeviceProfile:
        return DeviceProfile.from_json(self.model_dump())


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="What the key is for, for people.")
    tenant: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The fleet or customer the key acts for.")
    scopes: list[ScopeName] = Field(min_length=1, max_length=4)
    expires_at: float | None = Field(None, description="Unix time after which the key is refused; never when null.")
    limits: KeyLimitsBody | None = None
    device_profile: DeviceProfileBody | None = None


class KeyUpdate(BaseModel):
    """Only the fields sent change; `device_profile: null` removes the profile."""

    model_config = ConfigDict(extra="forbid")

    limits: KeyLimitsBody | None = None
    device_profile: DeviceProfileBody | None = None


class KeyOut(BaseModel):
    key_id: str = Field(description="The key's public id (the part after `hzk_`, before the secret).")
    name: str
    tenant: str
    scopes: list[ScopeName]
    status: KeyStatus
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None = Field(description="Written at most once a minute per server process.")
    limits: KeyLimitsBody
    device_profile: DeviceProfileBody | None

    @classmethod
    def of(cls, record: ApiKeyRecord, now: float) -> KeyOut:
        status: KeyStatus = "revoked" if record.revoked_at is not None else "active"
        if status == "active" and not record.usable_at(now):
            status = "expired"
        profile = record.device_profile
        return cls(
            key_id=record.key_id,
            name=record.name,
            tenant=record.tenant,
            scopes=sorted(scope.value for scope in record.scopes),
            status=status,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
            limits=KeyLimitsBody.of(record.limits),
            device_profile=DeviceProfileBody.model_validate(profile.to_json()) if profile else None,
        )


class KeyCreated(BaseModel):
    key: str = Field(description="The API key. Shown this once: store it now; only its hash is kept.")
    record: KeyOut

    @classmethod
    def of(cls, created: CreatedKey, now: float) -> KeyCreated:
        return cls(key=created.key, record=KeyOut.of(created.record, now))


class KeyList(BaseModel):
    keys: list[KeyOut] = Field(description="Newest first.")
