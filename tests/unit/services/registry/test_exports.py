"""Export formatting: RFC 7946 features, CSV rows, Open311 GeoReport v2 requests."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import geojson

from app.services.registry.exports import (
    CSV_COLUMNS,
    csv_lines,
    csv_row,
    geojson_feature,
    json_items,
    open311_request,
)
from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardRecord

FIRST = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
LAST = datetime(2025, 3, 2, 9, 30, tzinfo=UTC)


def record(status: Status = Status.OPEN, photo: str | None = "https://cdn.example/p.jpg") -> HazardRecord:
    return HazardRecord(
        id=7,
        tenant="city",
        map_key="m-1",
        label="pavement_failure",
        status=status,
        lat=50.85,
        lon=4.35,
        uncertainty_m=None,
        first_reported_at=FIRST,
        last_reported_at=LAST,
        updated_at=LAST,
        reports=3,
        best_photo_url=photo,
    )


def test_a_feature_is_a_valid_rfc7946_point_longitude_first() -> None:
    feature = geojson_feature(record())
    parsed = geojson.loads(json.dumps(feature))
    assert parsed.is_valid, parsed.errors()
    assert feature["geometry"]["coordinates"] == [4.35, 50.85]
    assert "crs" not in feature
    assert feature["properties"]["first_reported"] == "2025-03-01T08:00:00Z"


def test_a_batch_of_features_joins_into_a_valid_collection() -> None:
    body = json_items([record(), record()], geojson_feature, True) + json_items([record()], geojson_feature, False)
    collection = geojson.loads('{"type":"FeatureCollection","features":[' + body + "]}")
    assert collection.is_valid
    assert len(collection["features"]) == 3


def test_a_csv_row_has_the_columns_in_order_and_blank_for_none() -> None:
    text = csv_lines([list(CSV_COLUMNS), csv_row(record(photo=None))])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [
        {
            "id": "7",
            "label": "pavement_failure",
            "status": "open",
            "lat": "50.85",
            "lon": "4.35",
            "uncertainty_m": "",
            "first_reported": "2025-03-01T08:00:00Z",
            "last_reported": "2025-03-02T09:30:00Z",
            "reports": "3",
            "best_photo_url": "",
        }
    ]


def test_an_open311_request_is_closed_only_when_closed_or_rejected() -> None:
    states = {status: open311_request(record(status))["status"] for status in Status}
    assert states == {
        Status.OPEN: "open",
        Status.VERIFIED: "open",
        Status.SUSPECTED_FIXED: "open",
        Status.CLOSED: "closed",
        Status.REJECTED: "closed",
    }


def test_an_open311_request_has_the_georeport_fields() -> None:
    request = open311_request(record())
    assert request["service_request_id"] == "7"
    assert (request["lat"], request["long"]) == (50.85, 4.35)
    assert request["media_url"] == "https://cdn.example/p.jpg"
    assert request["requested_datetime"] == "2025-03-01T08:00:00Z"
    assert request["updated_datetime"] == "2025-03-02T09:30:00Z"
    assert request["service_name"] == "pavement failure"
