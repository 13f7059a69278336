"""A query's box measured on the ground, and the area limit a query or export is refused past."""

from __future__ import annotations

import math

import pytest

from app.services.core.errors import ValidationFailed
from app.services.registry.queries import bbox_area_km2, check_area
from app.services.registry.records import HazardFilter


def test_a_box_area_is_measured_on_the_ground_and_a_larger_one_is_refused_with_the_limit() -> None:
    assert bbox_area_km2((0.0, 0.0, 1.0, 1.0)) == pytest.approx(12_364, rel=1e-3)  # 1° x 1° at the equator
    assert bbox_area_km2((0.0, 60.0, 1.0, 61.0)) == pytest.approx(6_088, rel=1e-3)  # about half at 60° N
    assert bbox_area_km2((-180.0, -90.0, 180.0, 90.0)) == pytest.approx(4 * math.pi * 6371**2)
    check_area(HazardFilter(), 1.0)  # no box: nothing to refuse
    check_area(HazardFilter(bbox=(0.0, 0.0, 1.0, 1.0)), 12_400)
    with pytest.raises(ValidationFailed) as refused:
        check_area(HazardFilter(bbox=(0.0, 0.0, 1.0, 1.0)), 10_000)
    assert refused.value.details["max_area_km2"] == 10_000 and "10,000 km²" in refused.value.message
