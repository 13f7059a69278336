"""A key's camera, for projecting a box onto the road (the hazards issue): checked here so that projection can
trust it. Ranges are generous for vehicle and handheld cameras and refuse what would make projection absurd
(a camera under the road, looking at the sky, or a field of view of nothing or everything)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.services.core.errors import ValidationFailed
from app.services.identity.limits import checked_number, refuse_unknown_fields

MOUNTINGS = frozenset({"windshield", "dashboard", "roof", "bumper", "handlebar", "helmet", "handheld", "other"})
HEIGHT_M = (0.2, 10.0)
PITCH_DEG = (-30.0, 90.0)  # degrees below the horizon: 0 looks straight ahead, 90 straight down
HFOV_DEG = (10.0, 179.0)


@dataclass(frozen=True)
class DeviceProfile:
    height_m: float
    pitch_deg: float
    hfov_deg: float
    mounting: str = "windshield"

    def __post_init__(self) -> None:
        for field, bounds in (("height_m", HEIGHT_M), ("pitch_deg", PITCH_DEG), ("hfov_deg", HFOV_DEG)):
            object.__setattr__(self, field, checked_number(getattr(self, field), field, *bounds))
        if self.mounting not in MOUNTINGS:
            raise ValidationFailed(
                f"mounting must be one of {', '.join(sorted(MOUNTINGS))}.",
                details={"field": "mounting", "allowed": sorted(MOUNTINGS)},
            )

    @classmethod
    def from_json(cls, data: object) -> DeviceProfile:
        if not isinstance(data, dict):
            raise ValidationFailed("device_profile must be an object.", details={"field": "device_profile"})
        refuse_unknown_fields(data, {"height_m", "pitch_deg", "hfov_deg", "mounting"}, "device_profile")
        missing = sorted({"height_m", "pitch_deg", "hfov_deg"} - set(data))
        if missing:
            raise ValidationFailed(f"device_profile needs {', '.join(missing)}.", details={"fields": missing})
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
