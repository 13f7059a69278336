"""The hazard registry: durable hazard records (`GET /hazards/registry`, `GET /hazards/{id}` with its history),
operators' moves (verdict, close) and the exports a road authority's tools read, streamed.

`GET /hazards` stays the fleet's live map (Redis, GeoJSON): its clients see no change. Registry ids are numbers,
the map's hex strings. Reads need the `map:read` scope and see the caller's tenant (an admin key every tenant's);
moves need an operator (inspector or admin), who is named in the history, and reach every tenant's hazards.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app.http.auth import MapCaller, owned_by
from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.deps import operator_dependency, role_dependency
from app.http.routers.hazards import BBOX_PATTERN, json_error_responses
from app.http.schemas.registry import CloseIn, RegistryHazard, RegistryHazardDetail, RegistryHazardPage, VerdictIn
from app.http.schemas.registry import HazardHistoryEntry as HistoryEntry
from app.services.core.errors import (
    AdminDisabled,
    HazardNotFound,
    RegistryUnavailable,
    TooManyLoginAttempts,
    TransitionNotAllowed,
    Unauthorized,
    ValidationFailed,
)
from app.services.identity.operators import OperatorAuth
from app.services.identity.roles import Operator, Role
from app.services.registry.exports import HazardExports
from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardFilter
from app.services.registry.records import HazardRecord as RegistryRecord
from app.services.registry.store import HazardRegistry, is_unreachable
from app.services.tracking.hazard_map import parse_bbox
from app.services.tracking.meta import parse_rfc3339
from app.services.uploads.signing import MediaSigner

# Inline in the query's schema (an enum behind a $ref in a query parameter trips Schemathesis' generator).
StatusName = Literal["open", "verified", "rejected", "suspected_fixed", "closed"]
assert set(get_args(StatusName)) == {status.value for status in Status}
HAZARD_ID = re.compile(r"[0-9]{1,18}")  # registry ids are numbers (the map's are hex): fits a 64-bit column
READ_ERRORS = (*REQUEST_ERRORS, RegistryUnavailable)
MOVE_ERRORS = (*JSON_BODY_ERRORS, Unauthorized, TooManyLoginAttempts, AdminDisabled, HazardNotFound)
EXPORT_MEDIA_TYPES = {
    "geojson": "application/geo+json",
    "csv": "text/csv; charset=utf-8",
    "open311": "application/json",
}


def hazard_filter(
    caller: MapCaller,
    status: Annotated[StatusName | None, Query(description="Only hazards in this status.")] = None,
    label: Annotated[str | None, Query(max_length=64, description="Only hazards of this class.")] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only hazards last reported at or after this time (RFC 3339 with an offset).",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    bbox: Annotated[
        str | None, Query(pattern=BBOX_PATTERN, description="minLon,minLat,maxLon,maxLat (WGS-84 degrees).")
    ] = None,
) -> HazardFilter:
    box = None if bbox is None else parse_bbox(bbox)
    return HazardFilter(
        tenant=owned_by(caller),
        status=None if status is None else Status(status),
        label=label,
        since=None if since is None else parse_since(since),
        bbox=None if box is None else (box.min_lon, box.min_lat, box.max_lon, box.max_lat),
    )


Filter = Annotated[HazardFilter, Depends(hazard_filter)]


def parse_since(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(parse_rfc3339(value), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValidationFailed(f"since {exc}.", details={"field": "since", "value": value[:64]}) from None


def parse_hazard_id(value: str) -> int:
    """A registry id; anything else (a map id, say) names no hazard here."""
    if not HAZARD_ID.fullmatch(value):
        raise HazardNotFound(details={"hazard_id": value[:64]})
    return int(value)


async def streamed(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """`chunks`, its first batch read before the answer starts: a database that is down is a 503, not a cut
    stream (failures later still cut it: the client sees an incomplete document, never a wrong one)."""
    head: list[str] = []
    try:
        for _ in range(2):  # the document's opening, then its first batch of rows (or its end)
            head.append(await anext(chunks))
    except StopAsyncIteration:
        pass
    except Exception as exc:
        if is_unreachable(exc):
            raise RegistryUnavailable(details={"reason": type(exc).__name__}) from exc
        raise

    async def rest() -> AsyncIterator[str]:
        for chunk in head:
            yield chunk
        async for chunk in chunks:
            yield chunk

    return rest()


def create_registry_router(
    registry: HazardRegistry,
    exports: HazardExports,
    auth: OperatorAuth,
    client_address: ClientAddress,
    media_urls: MediaSigner,
) -> APIRouter:
    """`media_urls`: best photos kept by the service are handed out signed (AUTH_MODE=keys), as everywhere."""
    router = APIRouter(prefix="/hazards", tags=["hazard registry"])
    inspector = role_dependency(operator_dependency(auth, client_address), Role.INSPECTOR)

    @router.get("/registry", responses=error_responses(*READ_ERRORS))
    async def list_registry_hazards(
        where: Filter,
        limit: int | None = Query(  # a default, not Annotated: the limit is the registry's, known only here
            None, ge=1, le=registry.max_page_size, description="Hazards per page; the most by default."
        ),
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of a page.")] = None,
    ) -> RegistryHazardPage:
        """Registry hazards by status, class, time and area, a page at a time (422 names the page limit)."""
        page = await registry.query(where, limit=limit, cursor=cursor)
        hazards = [RegistryHazard.of(signed(r, media_urls)) for r in page.items]
        return RegistryHazardPage(hazards=hazards, next_cursor=page.next_cursor)

    for kind, media_type in EXPORT_MEDIA_TYPES.items():
        _add_export(router, exports, kind, media_type, media_urls)

    @router.get("/{hazard_id}", responses=error_responses(*READ_ERRORS, HazardNotFound))
    async def get_registry_hazard(hazard_id: str, caller: MapCaller) -> RegistryHazardDetail:
        """A registry hazard with its history (who moved it, when, why); another tenant's answers as unknown."""
        return await _detail(registry, parse_hazard_id(hazard_id), owned_by(caller), media_urls)

    @router.post(
        "/{hazard_id}/verdict", responses=error_responses(*MOVE_ERRORS, TransitionNotAllowed, RegistryUnavailable)
    )
    async def give_hazard_verdict(hazard_id: str, body: VerdictIn, who: Operator = inspector) -> RegistryHazardDetail:
        """An operator's verdict on an open hazard: `not_an_issue` rejects it (later reports there are silenced),
        any other category verifies it. 409 lists the moves its status allows."""
        number = parse_hazard_id(hazard_id)
        await registry.give_verdict(number, actor=who.name, category=body.category.value, note=body.note, tenant=None)
        return await _detail(registry, number, None, media_urls)

    @router.post(
        "/{hazard_id}/close", responses=error_responses(*MOVE_ERRORS, TransitionNotAllowed, RegistryUnavailable)
    )
    async def close_hazard(
        hazard_id: str, body: CloseIn | None = None, who: Operator = inspector
    ) -> RegistryHazardDetail:
        """An operator closes a hazard (repaired, or dealt with); a new sighting opens it again."""
        number = parse_hazard_id(hazard_id)
        await registry.close(number, actor=who.name, note=None if body is None else body.note, tenant=None)
        return await _detail(registry, number, None, media_urls)

    return router


def signed(record: RegistryRecord, media_urls: MediaSigner) -> RegistryRecord:
    return replace(record, best_photo_url=media_urls.sign(record.best_photo_url))


async def _detail(
    registry: HazardRegistry, hazard_id: int, tenant: str | None, media_urls: MediaSigner
) -> RegistryHazardDetail:
    """`tenant`: whose hazard it must be (None: any)."""
    record = signed(await registry.get(hazard_id, tenant=tenant), media_urls)
    history = await registry.history(hazard_id, tenant=tenant)
    return RegistryHazardDetail(
        **RegistryHazard.of(record).model_dump(), history=[HistoryEntry.of(event) for event in history]
    )


def _add_export(router: APIRouter, exports: HazardExports, kind: str, media_type: str, media_urls: MediaSigner) -> None:
    path = "/export/open311" if kind == "open311" else f"/export.{kind}"
    produce = {"geojson": exports.geojson, "csv": exports.csv, "open311": exports.open311}[kind]
    descriptions = {
        "geojson": "Registry hazards as an RFC 7946 FeatureCollection, streamed.",
        "csv": "Registry hazards as CSV (one row per hazard), streamed.",
        "open311": "Registry hazards as Open311 GeoReport v2 service requests (a JSON array), streamed.",
    }

    async def export(where: Filter) -> StreamingResponse:
        headers = {"Content-Disposition": f'attachment; filename="hazards.{"json" if kind == "open311" else kind}"'}
        return StreamingResponse(
            await streamed(produce(where, media_urls.sign)), media_type=media_type, headers=headers
        )

    router.add_api_route(
        path,
        export,
        methods=["GET"],
        name=f"export_registry_hazards_{'georeport' if kind == 'open311' else kind}",
        description=descriptions[kind],
        response_class=StreamingResponse,
        responses={**json_error_responses(*READ_ERRORS), 200: {"content": {media_type.split(";")[0]: {}}}},
    )
