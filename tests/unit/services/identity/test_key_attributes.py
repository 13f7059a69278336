"""A key's limits and device profile: in range, or 422 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from app.services.core.errors import ValidationFailed
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.key_records import ApiKeyRecord
from app.services.identity.limits import KeyLimits
from app.services.identity.principal import Scope

PROFILE = {"height_m": 1.4, "pitch_deg": 8, "hfov_deg": 90, "mounting": "windshield"}


def test_a_profile_in_range_round_trips() -> None:
    profile = DeviceProfile.from_json(PROFILE)
    assert profile.pitch_deg == 8.0 and isinstance(profile.pitch_deg, float)
    assert DeviceProfile.from_json(profile.to_json()) == profile


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"height_m": 0.0}, "height_m"),
        ({"height_m": 50}, "height_m"),
        ({"pitch_deg": 91}, "pitch_deg"),
        ({"pitch_deg": -45}, "pitch_deg"),
        ({"hfov_deg": 0}, "hfov_deg"),
        ({"hfov_deg": 180}, "hfov_deg"),
        ({"hfov_deg": float("nan")}, "hfov_deg"),
        ({"height_m": True}, "height_m"),
        ({"height_m": "1.4"}, "height_m"),
        ({"mounting": "ceiling"}, "mounting"),
    ],
)
def test_a_profile_out_of_range_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        DeviceProfile.from_json({**PROFILE, **change})
    assert raised.value.details["field"] == field


def test_a_profile_with_missing_or_unknown_fields_is_refused() -> None:
    with pytest.raises(ValidationFailed) as raised:
        DeviceProfile.from_json({"height_m": 1.4})
    assert raised.value.details["fields"] == ["hfov_deg", "pitch_deg"]
    with pytest.raises(ValidationFailed) as raised:
        DeviceProfile.from_json({**PROFILE, "focal_px": 900})
    assert raised.value.details["fields"] == ["focal_px"]


def test_limits_in_range_round_trip_and_none_means_the_default() -> None:
    limits = KeyLimits.from_json({"frames_per_second": 5, "jobs_in_flight": 2})
    assert limits == KeyLimits(frames_per_second=5.0, jobs_in_flight=2) and limits.sessions_per_minute is None
    assert KeyLimits.from_json(limits.to_json()) == limits
    assert KeyLimits().to_json() == {}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"frames_per_second": 0}, "frames_per_second"),
        ({"frames_per_second": -1}, "frames_per_second"),
        ({"sessions_per_minute": 1e9}, "sessions_per_minute"),
        ({"jobs_in_flight": 0}, "jobs_in_flight"),
        ({"jobs_in_flight": 1.5}, "jobs_in_flight"),
    ],
)
def test_limits_out_of_range_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        KeyLimits.from_json(data)
    assert raised.value.details["field"] == field


def test_a_record_round_trips_through_its_redis_fields_and_keeps_only_the_digest() -> None:
    record = ApiKeyRecord(
        key_id="abcd1234",
        name="van 12",
        tenant="fleet-a",
        scopes=frozenset({Scope.DETECT, Scope.MAP_READ}),
        created_at=1000.5,
        expires_at=2000.0,
        limits=KeyLimits(frames_per_second=10.0),
        device_profile=DeviceProfile.from_json(PROFILE),
    )
    fields = record.to_fields("d" * 64)
    assert fields["digest"] == "d" * 64 and fields["scopes"] == "detect map:read"
    assert ApiKeyRecord.from_fields(fields) == record


def test_a_record_is_usable_until_revoked_or_expired() -> None:
    record = ApiKeyRecord("abcd1234", "k", "t", frozenset({Scope.DETECT}), created_at=0.0, expires_at=10.0)
    assert record.usable_at(9.9) and not record.usable_at(10.0)
    revoked = ApiKeyRecord("abcd1234", "k", "t", frozenset({Scope.DETECT}), created_at=0.0, revoked_at=5.0)
    assert not revoked.usable_at(1.0)
    principal = record.principal()
    assert (principal.tenant, principal.key_id, principal.operator) == ("t", "abcd1234", None)
