"""The fleet's hazard maps in Redis, one per tenant: confirmed, located hazards of the tenant's sessions, merged by
class and distance; one tenant's reports never merge into another's entries.

A tenant's keys share the hash tag `{<fleet>:<tenant>}`, apart from every session's: `hazards:{<fleet>:<tenant>}:geo`
(GEO set of map ids), `...:expiry` (zset: map id -> when it expires), `...:sources` (hash: `<session>/<hazard>` -> map
id), `...:offsets` (hash: session -> its GPS offset's samples), and per entry `...:entry:<id>` (hash) with its
`:reports` (hash: source -> that session's report). Merging is one
MERGE_INTO_MAP call, separate from the session's association. `hazards:{<fleet>}:tenants` (set) names the tenants
that have a map, for the readers of every tenant's (an admin key, an operator).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import HazardMapUnavailable, ValidationFailed
from app.services.core.redis_client import register_script
from app.services.core.types import RedisClient, RedisObserver
from app.services.identity.principal import LOCAL_TENANT
from app.services.sessions.guarded import guarded
from app.services.tracking import scripts
from app.services.tracking.types import HazardRecord

T = TypeVar("T")
EARTH_RADIUS_M = 6_372_797.560856  # the radius Redis' GEO commands use, so distances agree with theirs
MAP_ID_BYTES = 8
GEO_MAX_LAT = 85.05112878  # Redis GEO (web mercator) stores no point nearer the poles than this
CAMERA_GPS_UNCERTAINTY_M = 6.2  # as the merge script takes a report stored without one


@dataclass(frozen=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lon: float, lat: float) -> bool:
        return self.min_lon <= lon <= self.max_lon and self.min_lat <= lat <= self.max_lat


@dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True)
class MapKeys:
    """One tenant's map: its keys share one hash tag, so a script touches one slot."""

    geo: str
    expiry: str
    sources: str
    entry_prefix: str
    offsets: str


@dataclass(frozen=True)
class Merged:
    """The map entry a report is now part of; `realigned`: this report established its session's GPS offset, so the
    session's earlier reports, matched without it, are to be merged again; `emptied`: entries whose last report
    this one moved into `entry_id` (or that gave way to it): gone from the map, one hazard with it."""

    entry_id: str
    realigned: bool = False
    emptied: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapHazard:
    hazard_id: str
    label: str
    lat: float
    lon: float
    reports: int
    first_reported: float
    last_reported: float
    max_confidence: float
    best_frame_url: str | None
    model: str
    position_uncertainty_m: float | None = None  # None for an entry merged before positions had one
    position_method: str | None = None
    # Where it is in the map's frame (its reports less their sessions' GPS offsets: `scripts.MERGE_INTO_MAP`): hazards
    # side by side keep their places there; None for an entry merged before the frame.
    frame_lat: float | None = None
    frame_lon: float | None = None


def parse_bbox(value: str) -> BBox:
    """`minLon,minLat,maxLon,maxLat` (RFC 7946's order); a box across the antimeridian is not supported."""
    numbers = _numbers("bbox", value, 4)
    box = BBox(*numbers)
    if not (-180 <= box.min_lon <= box.max_lon <= 180 and -90 <= box.min_lat <= box.max_lat <= 90):
        raise ValidationFailed(
            "bbox must be minLon,minLat,maxLon,maxLat with -180 <= minLon <= maxLon <= 180 and "
            "-90 <= minLat <= maxLat <= 90.",
            details={"field": "bbox", "value": value[:200]},
        )
    return box


def parse_near(value: str, radius_m: float) -> Near:
    lat, lon = _numbers("near", value, 2)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValidationFailed(
            "near must be lat,lon with -90 <= lat <= 90 and -180 <= lon <= 180.",
            details={"field": "near", "value": value[:200]},
        )
    return Near(lat, lon, radius_m)


def _numbers(field: str, value: str, count: int) -> list[float]:
    parts = value.split(",")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        raise ValidationFailed(
            f"{field} must be {count} comma-separated numbers.", details={"field": field, "value": value[:200]}
        )
    return numbers


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine, on Redis' sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class HazardMap:
    def __init__(
        self,
        client: RedisClient,
        breaker: AsyncBreaker,
        fleet_name: str,
        *,
        merge_meters: float,
        ttl_days: float,
        merge_sigmas: float = 3.0,
        clock: Callable[[], float] = time.time,
        observe: RedisObserver | None = None,
    ) -> None:
        self._redis = client
        self.breaker = breaker
        self._fleet = fleet_name
        self._tenants = f"hazards:{{{fleet_name}}}:tenants"
        self._known_tenants: set[str] = set()  # added to `_tenants` by this process: no SADD per merge
        self.merge_meters = merge_meters
        self.merge_sigmas = merge_sigmas
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock
        self._observe = observe
        self._merge = register_script(client, scripts.MERGE_INTO_MAP)

    async def _guarded(self, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await guarded(self.breaker, name, operation, self._observe, HazardMapUnavailable)

    def keys(self, tenant: str) -> MapKeys:
        base = f"hazards:{{{self._fleet}:{tenant}}}"
        return MapKeys(f"{base}:geo", f"{base}:expiry", f"{base}:sources", f"{base}:entry:", f"{base}:offsets")

    async def merge(self, session_id: str, record: HazardRecord, tenant: str = LOCAL_TENANT) -> Merged:
        """Report a session's located hazard to its tenant's map: the map entry it became part of. A record without
        an uncertainty is the camera's GPS (`positions.camera_gps`)."""
        if record.lat is None or record.lon is None:
            raise ValueError("only located hazards go on the map")
        uncertainty = record.position_uncertainty_m
        if uncertainty is None:
            uncertainty = CAMERA_GPS_UNCERTAINTY_M
        if abs(record.lat) > GEO_MAX_LAT:
            return Merged("")  # no roads there, and Redis GEO cannot store it: the session keeps its record
        if tenant not in self._known_tenants:  # once per tenant and process: the hot path keeps its round trips
            await self._guarded("map_tenant", lambda: cast(Awaitable[int], self._redis.sadd(self._tenants, tenant)))
            self._known_tenants.add(tenant)
        map_keys = self.keys(tenant)
        args = [
            map_keys.entry_prefix,
            repr(self._clock()),
            repr(self._ttl_seconds),
            repr(self.merge_meters),
            f"{session_id}/{record.hazard_id}",
            record.label,
            repr(record.lon),
            repr(record.lat),
            repr(record.max_confidence),
            repr(record.first_seen),
            repr(record.last_seen),
            record.best_frame_url or "",
            secrets.token_hex(MAP_ID_BYTES),
            record.model,
            repr(uncertainty),
            record.position_method or "camera_gps",
            repr(self.merge_sigmas),
            str(record.frames),
        ]
        keys = [map_keys.geo, map_keys.expiry, map_keys.sources, map_keys.offsets]
        entry_id, realigned, emptied = await self._guarded("map_merge", lambda: self._merge(keys=keys, args=args))
        return Merged(str(entry_id), bool(realigned), tuple(str(gone) for gone in emptied))

    async def near(self, where: Near, limit: int, tenant: str | None = LOCAL_TENANT) -> list[MapHazard]:
        """Entries of `tenant`'s map (None: every tenant's) within `radius_m` of a point, nearest first."""
        return await self._search_tenants(tenant, where.lon, where.lat, where.radius_m, limit, None)

    @staticmethod
    def _searchable(lon: float, lat: float, radius_m: float) -> tuple[float, float, float]:
        """A search centre Redis accepts (latitude within GEO_MAX_LAT) whose circle still covers the asked one."""
        clamped = max(-GEO_MAX_LAT, min(GEO_MAX_LAT, lat))
        return lon, clamped, radius_m + distance_m(lat, lon, clamped, lon)

    async def within(self, box: BBox, limit: int, tenant: str | None = LOCAL_TENANT) -> list[MapHazard]:
        """Entries of `tenant`'s map (None: every tenant's) inside a bounding box: a radius search around its centre
        that covers it, filtered exactly."""
        lat, lon = (box.min_lat + box.max_lat) / 2, (box.min_lon + box.max_lon) / 2
        radius = max(distance_m(lat, lon, corner_lat, corner_lon) for corner_lat, corner_lon in _corners(box))
        return await self._search_tenants(tenant, lon, lat, radius + 1.0, limit, box)

    async def _search_tenants(
        self, tenant: str | None, lon: float, lat: float, radius_m: float, limit: int, box: BBox | None
    ) -> list[MapHazard]:
        """One tenant's map, or every tenant's merged nearest first."""
        if tenant is not None:
            return await self._search(self.keys(tenant), lon, lat, radius_m, limit, box)
        tenants = await self._guarded(
            "map_tenants", lambda: cast(Awaitable[set[str]], self._redis.smembers(self._tenants))
        )
        found: list[MapHazard] = []
        for each in sorted(tenants):
            found += await self._search(self.keys(str(each)), lon, lat, radius_m, limit, box)
        found.sort(key=lambda hazard: distance_m(lat, lon, hazard.lat, hazard.lon))
        return found[:limit]

    async def _search(
        self, map_keys: MapKeys, lon: float, lat: float, radius_m: float, limit: int, box: BBox | None
    ) -> list[MapHazard]:
        now = self._clock()
        center_lon, center_lat, search_m = self._searchable(lon, lat, radius_m)

        def wanted(coordinates: list[Any]) -> bool:
            entry_lon, entry_lat = float(coordinates[0]), float(coordinates[1])
            if box is not None:
                return box.contains(entry_lon, entry_lat)
            return search_m == radius_m or distance_m(lat, lon, entry_lat, entry_lon) <= radius_m

        async def read() -> list[MapHazard]:
            found = cast(
                list[Any],
                await self._redis.geosearch(
                    map_keys.geo,
                    longitude=center_lon,
                    latitude=center_lat,
                    radius=search_m,
                    unit="m",
                    sort="ASC",
                    withcoord=True,
                ),
            )
            ids = [str(item[0]) for item in found if wanted(item[1])]
            hazards: list[MapHazard] = []
            for start in range(0, len(ids), 100):  # bounded pipelines; stop reading once `limit` are in
                batch = ids[start : start + 100]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for map_id in batch:
                        pipe.hgetall(map_keys.entry_prefix + map_id)
                        pipe.zscore(map_keys.expiry, map_id)
                    replies = await pipe.execute()
                for map_id, fields, expires in zip(batch, replies[::2], replies[1::2], strict=True):
                    if fields and expires is not None and float(expires) > now:  # expired: purged at next merge
                        hazards.append(_map_hazard(map_id, fields))
                if len(hazards) >= limit:
                    break
            return hazards[:limit]

        return await self._guarded("map_search", read)


def _corners(box: BBox) -> list[tuple[float, float]]:
    return [
        (box.min_lat, box.min_lon),
        (box.min_lat, box.max_lon),
        (box.max_lat, box.min_lon),
        (box.max_lat, box.max_lon),
    ]


def _map_hazard(map_id: str, fields: dict[str, str]) -> MapHazard:
    return MapHazard(
        hazard_id=map_id,
        label=fields["label"],
        lat=float(fields["lat"]),
        lon=float(fields["lon"]),
        reports=int(fields["reports"]),
        first_reported=float(fields["first_reported"]),
        last_reported=float(fields["last_reported"]),
        max_confidence=float(fields["max_confidence"]),
        best_frame_url=fields.get("best_frame_url") or None,
        model=fields.get("model", ""),
        position_uncertainty_m=float(fields["position_uncertainty_m"]) if "position_uncertainty_m" in fields else None,
        position_method=fields.get("position_method"),
        frame_lat=float(fields["frame_lat"]) if "frame_lat" in fields else None,
        frame_lon=float(fields["frame_lon"]) if "frame_lon" in fields else None,
    )
