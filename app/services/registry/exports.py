"""Exports a road authority's tools read: GeoJSON (RFC 7946), CSV for a GIS, an Open311 GeoReport v2 feed.

Each is an async iterator of text chunks over a server-side cursor, one chunk per batch of rows, so an export of
100,000 hazards holds one batch in memory, never the whole answer.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.registry.lifecycle import Status
from app.services.registry.queries import check_area, select_hazards
from app.services.registry.records import HazardFilter, HazardRecord, PhotoUrl, same_url
from app.services.registry.tables import hazards

CSV_COLUMNS = (
    "id",
    "label",
    "status",
    "lat",
    "lon",
    "uncertainty_m",
    "first_reported",
    "last_reported",
    "reports",
    "best_photo_url",
)
POINT_COLUMNS = (hazards.c.id, hazards.c.lat, hazards.c.lon, hazards.c.label, hazards.c.status)
OPEN311_CLOSED = frozenset({Status.CLOSED, Status.REJECTED})  # GeoReport v2 knows only open and closed


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def geojson_feature(record: HazardRecord) -> dict[str, Any]:
    """A Point feature: RFC 7946 orders coordinates longitude first and allows no `crs` (always WGS 84)."""
    return {
        "type": "Feature",
        "id": record.id,
        "geometry": {"type": "Point", "coordinates": [record.lon, record.lat]},
        "properties": {
            "label": record.label,
            "status": record.status.value,
            "uncertainty_m": record.uncertainty_m,
            "first_reported": iso(record.first_reported_at),
            "last_reported": iso(record.last_reported_at),
            "reports": record.reports,
            "best_photo_url": record.best_photo_url,
        },
    }


def csv_row(record: HazardRecord) -> list[object]:
    return [
        record.id,
        record.label,
        record.status.value,
        record.lat,
        record.lon,
        "" if record.uncertainty_m is None else record.uncertainty_m,
        iso(record.first_reported_at),
        iso(record.last_reported_at),
        record.reports,
        record.best_photo_url or "",
    ]


def open311_request(record: HazardRecord) -> dict[str, Any]:
    """One service request as GeoReport v2's GET requests answers it."""
    return {
        "service_request_id": str(record.id),
        "status": "closed" if record.status in OPEN311_CLOSED else "open",
        "status_notes": record.status.value,
        "service_name": record.label.replace("_", " "),
        "service_code": record.label,
        "requested_datetime": iso(record.first_reported_at),
        "updated_datetime": iso(record.updated_at),
        "lat": record.lat,
        "long": record.lon,
        "media_url": record.best_photo_url,
    }


def csv_lines(rows: Iterable[list[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)  # RFC 4180 line ends
    return buffer.getvalue()


def json_items(records: list[HazardRecord], shape: Callable[[HazardRecord], dict[str, Any]], first: bool) -> str:
    """A batch of array items, each after a comma except the array's first (one encoder call per batch)."""
    body = json.dumps([shape(record) for record in records], separators=(",", ":"))[1:-1]
    return body if first or not body else "," + body


class HazardExports:
    def __init__(self, engine: AsyncEngine, *, batch_size: int = 1000, max_area_km2: float = math.inf) -> None:
        self._engine = engine
        self.batch_size = batch_size
        self.max_area_km2 = max_area_km2  # a larger bbox is refused (422) before the first row is read

    async def rows(self, where: HazardFilter, *columns: sa.ColumnElement[Any]) -> AsyncIterator[Sequence[sa.Row[Any]]]:
        """Matching rows (`columns`, else whole ones) by id, `batch_size` at a time, through a server-side cursor."""
        check_area(where, self.max_area_km2)
        statement = select_hazards(where)
        if columns:
            statement = statement.with_only_columns(*columns)
        async with self._engine.connect() as connection:
            result = await connection.stream(statement.execution_options(yield_per=self.batch_size))
            async for rows in result.partitions(self.batch_size):
                yield rows

    async def batches(self, where: HazardFilter, photo_url: PhotoUrl = same_url) -> AsyncIterator[list[HazardRecord]]:
        """Matching hazards by id, `batch_size` at a time; `photo_url` gives each best photo the address the reader
        may fetch (a signed one where the service keeps its frames)."""
        async for rows in self.rows(where):
            yield [HazardRecord.from_row(row, photo_url) for row in rows]

    async def points(self, where: HazardFilter) -> AsyncIterator[str]:
        """What a map draws and nothing more, compact (a fifth of the GeoJSON's bytes, no per-row objects):
        `{"columns": ["id", "lat", "lon", "label", "status"], "points": [[7, 52.5, 13.4, "pothole", "open"], ...]}`."""
        yield '{"columns":' + json.dumps([column.name for column in POINT_COLUMNS]) + ',"points":['
        first = True
        async for rows in self.rows(where, *POINT_COLUMNS):
            body = json.dumps([tuple(row) for row in rows], separators=(",", ":"))[1:-1]
            yield body if first or not body else "," + body
            first = False
        yield "]}\n"

    async def geojson(self, where: HazardFilter, photo_url: PhotoUrl = same_url) -> AsyncIterator[str]:
        yield '{"type":"FeatureCollection","features":['
        first = True
        async for records in self.batches(where, photo_url):
            yield json_items(records, geojson_feature, first)
            first = False
        yield "]}\n"

    async def csv(self, where: HazardFilter, photo_url: PhotoUrl = same_url) -> AsyncIterator[str]:
        yield csv_lines([list(CSV_COLUMNS)])
        async for records in self.batches(where, photo_url):
            yield csv_lines(csv_row(record) for record in records)

    async def open311(self, where: HazardFilter, photo_url: PhotoUrl = same_url) -> AsyncIterator[str]:
        """A JSON array of service requests (GeoReport v2's `requests.json` shape)."""
        yield "["
        first = True
        async for records in self.batches(where, photo_url):
            yield json_items(records, open311_request, first)
            first = False
        yield "]\n"
