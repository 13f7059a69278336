"""Exports from a real database parse as what they claim, and 100,000 hazards stream in constant memory."""

from __future__ import annotations

import csv
import gc
import io
import json
import time
import tracemalloc
from collections.abc import AsyncIterator

import geojson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.registry.exports import CSV_COLUMNS, HazardExports
from app.services.registry.records import HazardFilter
from app.services.registry.store import HazardRegistry
from app.services.registry.tables import hazards
from tests.integration.services.registry.conftest import at

MANY = 100_000
# Holding the whole export (30 MB of text, 100,000 rows and records) takes well over 100 MB; one batch a few MB.
RSS_GROWTH_BOUND_MB = 40
TRACED_PEAK_BOUND_MB = 20


async def text(chunks: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in chunks])


async def seed(registry: HazardRegistry) -> None:
    await registry.report_sighting("city", "a", "pothole", 50.85, 4.35, 2.5, at(0), "https://cdn.example/a.jpg")
    await registry.report_sighting("city", "b", "crack", 50.86, 4.36, None, at(1), None)


async def test_the_geojson_export_is_an_rfc7946_feature_collection(
    registry: HazardRegistry, engine: AsyncEngine
) -> None:
    await seed(registry)
    collection = geojson.loads(await text(HazardExports(engine, batch_size=1).geojson(HazardFilter())))
    assert collection.is_valid, collection.errors()
    assert [f["geometry"]["coordinates"] for f in collection["features"]] == [[4.35, 50.85], [4.36, 50.86]]


async def test_the_csv_export_has_one_row_per_hazard(registry: HazardRegistry, engine: AsyncEngine) -> None:
    await seed(registry)
    rows = list(csv.DictReader(io.StringIO(await text(HazardExports(engine).csv(HazardFilter(label="crack"))))))
    assert [tuple(row) for row in rows] == [CSV_COLUMNS]
    assert (rows[0]["label"], rows[0]["uncertainty_m"], rows[0]["best_photo_url"]) == ("crack", "", "")


async def test_the_open311_export_is_a_json_array_of_requests(registry: HazardRegistry, engine: AsyncEngine) -> None:
    await seed(registry)
    requests = json.loads(await text(HazardExports(engine).open311(HazardFilter())))
    assert [(r["status"], r["lat"], r["long"], r["media_url"]) for r in requests] == [
        ("open", 50.85, 4.35, "https://cdn.example/a.jpg"),
        ("open", 50.86, 4.36, None),
    ]


async def test_every_export_hands_out_the_photo_address_it_is_given(
    registry: HazardRegistry, engine: AsyncEngine
) -> None:
    """Where the service keeps its frames, readers get signed addresses: each format takes the same `photo_url`."""
    await seed(registry)
    exports = HazardExports(engine)

    def photo_url(url: str | None) -> str | None:
        return None if url is None else f"{url}?sig=s"

    features = json.loads(await text(exports.geojson(HazardFilter(), photo_url)))["features"]
    rows = list(csv.DictReader(io.StringIO(await text(exports.csv(HazardFilter(), photo_url)))))
    requests = json.loads(await text(exports.open311(HazardFilter(), photo_url)))
    signed = "https://cdn.example/a.jpg?sig=s"
    assert [f["properties"]["best_photo_url"] for f in features] == [signed, None]
    assert [row["best_photo_url"] for row in rows] == [signed, ""]
    assert [r["media_url"] for r in requests] == [signed, None]


async def test_an_empty_export_is_still_well_formed(engine: AsyncEngine) -> None:
    exports = HazardExports(engine)
    assert geojson.loads(await text(exports.geojson(HazardFilter()))).is_valid
    assert json.loads(await text(exports.open311(HazardFilter()))) == []


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_an_export_of_100000_hazards_streams_in_constant_memory(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for start in range(0, MANY, 10_000):
            await connection.execute(
                hazards.insert(),
                [
                    {
                        "tenant": "city",
                        "map_key": f"m{index}",
                        "label": "pothole",
                        "status": "open",
                        "lat": 50 + index * 1e-6,
                        "lon": 4 + index * 1e-6,
                        "uncertainty_m": 2.0,
                        "first_reported_at": at(0),
                        "last_reported_at": at(1),
                        "updated_at": at(1),
                        "reports": 1,
                        "best_photo_url": f"https://cdn.example/{index}.jpg",
                    }
                    for index in range(start, start + 10_000)
                ],
            )
    gc.collect()
    baseline, peak, size, started = rss_mb(), 0.0, 0, time.perf_counter()
    async for chunk in HazardExports(engine).geojson(HazardFilter()):
        size += len(chunk)
        peak = max(peak, rss_mb())
    elapsed = time.perf_counter() - started
    # RSS alone can hide a leak in memory the seeding freed; tracemalloc counts every Python allocation.
    tracemalloc.start()
    async for chunk in HazardExports(engine).csv(HazardFilter()):
        size += len(chunk)
    traced_peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    print(f"geojson {MANY}: {elapsed:.2f} s, RSS growth {peak - baseline:.1f} MB; csv traced peak {traced_peak:.1f} MB")
    assert size > MANY * 100
    assert peak - baseline < RSS_GROWTH_BOUND_MB
    assert traced_peak < TRACED_PEAK_BOUND_MB
