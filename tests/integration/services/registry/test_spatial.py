"""PostGIS where the server has it: migration 0003 creates the extension and a `geom` point (SRID 4326) generated
from lat/lon with a GiST index, and a bbox on it selects exactly what the registry's bbox query (the one behind
`GET /hazards/registry?bbox=`) answers, for the hazards of a generated road. Where PostGIS cannot be created (a
database owner who is not a superuser: PostGIS is not a trusted extension) or on SQLite, the migration still runs
and leaves the lat/lon index alone."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from scenes import generate_road
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.identity.principal import LOCAL_TENANT
from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.spatial import spatial_index
from app.services.registry.store import HazardRegistry
from tests.integration.services.registry.conftest import T0, fresh_database_url
from tests.support.postgres_process import SUPERUSER, PostgresProcess

# Reflection of `hazards` meets the geometry type, which SQLAlchemy has no class for (the comparison skips it).
pytestmark = pytest.mark.filterwarnings("ignore:Did not recognize type 'geometry'")
ROAD = generate_road(9102, hazards=10)


async def sight_road(registry: HazardRegistry) -> None:
    for hazard in ROAD.hazards:
        at = T0 + timedelta(seconds=hazard.hazard_id)
        key = f"{ROAD.seed}-{hazard.hazard_id}"
        await registry.apply_sighting(Sighting(LOCAL_TENANT, key, hazard.label, hazard.lat, hazard.lon, 1.0, at))


async def index_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        indexes = await connection.run_sync(lambda sync: sa.inspect(sync).get_indexes("hazards"))
    return {index["name"] for index in indexes if index["name"] is not None}


async def test_postgis_geometry_answers_a_bbox_like_the_registry(postgres_server: PostgresProcess) -> None:
    assert postgres_server.postgis_available(), "PostGIS is not installed: scripts/ensure-system-deps.sh installs it"
    url = await fresh_database_url(postgres_server, template="template0")  # no PostGIS yet: the migration creates it
    await upgrade(url)
    engine = open_engine(url)
    try:
        assert await spatial_index(engine) == "postgis"
        assert {"ix_hazards_geom", "ix_hazards_lat_lon"} <= await index_names(engine)
        registry = HazardRegistry(engine, passes_to_fix=3, max_page_size=50)
        await sight_road(registry)
        half = ROAD.hazards[: len(ROAD.hazards) // 2]  # a box around the first half of the road's hazards
        lats, lons = [h.lat for h in half], [h.lon for h in half]
        bbox = (min(lons) - 1e-6, min(lats) - 1e-6, max(lons) + 1e-6, max(lats) + 1e-6)
        answered = {h.id for h in (await registry.query(HazardFilter(bbox=bbox))).items}
        async with engine.connect() as connection:
            within = set(
                await connection.scalars(
                    sa.text("SELECT id FROM hazards WHERE ST_Within(geom, ST_MakeEnvelope(:w, :s, :e, :n, 4326))"),
                    dict(zip("wsen", bbox, strict=True)),
                )
            )
            rows = await connection.execute(
                sa.text("SELECT lat, lon, ST_X(geom), ST_Y(geom), ST_AsText(geom) FROM hazards")
            )
            layer = (  # what QGIS and ArcGIS read to offer the table as a layer
                await connection.execute(
                    sa.text("SELECT srid, type FROM geometry_columns WHERE f_table_name = 'hazards'")
                )
            ).all()
        assert len(half) <= len(answered) < len(ROAD.hazards)
        assert within == answered
        assert layer == [(4326, "POINT")]
        for lat, lon, x, y, text in rows:  # x is the longitude: ST_MakePoint(lon, lat)
            assert (x, y) == (lon, lat)
            wkt_lon, wkt_lat = map(float, text.removeprefix("POINT(").removesuffix(")").split())
            assert wkt_lon == pytest.approx(lon, abs=1e-12) and wkt_lat == pytest.approx(lat, abs=1e-12)
    finally:
        await engine.dispose()


async def test_without_the_right_to_create_postgis_the_lat_lon_index_serves(postgres_server: PostgresProcess) -> None:
    role = f"registry_owner_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(host="127.0.0.1", port=postgres_server.port, user=SUPERUSER)
    try:
        await connection.execute(f'CREATE ROLE "{role}" LOGIN')  # not a superuser: PostGIS is refused
    finally:
        await connection.close()
    url = (await fresh_database_url(postgres_server, template="template0", owner=role)).replace(
        f"//{SUPERUSER}@", f"//{role}@"
    )
    await upgrade(url)
    engine = open_engine(url)
    try:
        assert await spatial_index(engine) == "lat_lon"
        indexes = await index_names(engine)
        assert "ix_hazards_lat_lon" in indexes and "ix_hazards_geom" not in indexes
        await sight_road(HazardRegistry(engine, passes_to_fix=3, max_page_size=50))  # the registry works as ever
    finally:
        await engine.dispose()


async def test_sqlite_keeps_the_lat_lon_index(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    await upgrade(url)
    engine = open_engine(url)
    try:
        assert await spatial_index(engine) == "lat_lon"
        assert "ix_hazards_lat_lon" in await index_names(engine)
    finally:
        await engine.dispose()
