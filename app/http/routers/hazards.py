"""Hazards, not boxes: a session's confirmed hazards (records and GeoJSON) and the fleet's hazard map (GeoJSON)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.openapi.constants import REF_PREFIX
from fastapi.responses import JSONResponse

from app.http.auth import MapCaller, owned_by
from app.http.openapi import ERROR_SCHEMA, REQUEST_ERRORS, error_responses
from app.http.schemas.hazards import HazardOut, MapHazardCollection, SessionHazardCollection, SessionHazards
from app.services.core.errors import ApiError, HazardMapUnavailable, SessionNotFound, SessionStoreUnavailable
from app.services.identity.principal import Principal
from app.services.tracking import geojson
from app.services.tracking.hazard_map import MapHazard
from app.services.tracking.service import TrackingService
from app.services.tracking.types import HazardRecord
from app.services.uploads.signing import MediaSigner

NUMBER = r"-?\d{1,3}(\.\d{1,17})?"
BBOX_PATTERN = rf"^{NUMBER},{NUMBER},{NUMBER},{NUMBER}$"
NEAR_PATTERN = rf"^{NUMBER},{NUMBER}$"
MAX_RADIUS_M = 50_000.0
MAX_LIMIT = 1000


class GeoJSONResponse(JSONResponse):
    media_type = geojson.MEDIA_TYPE


def json_error_responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """`error_responses` for a route whose answer is GeoJSON: its errors are still `application/json` (FastAPI
    would document a response `model` under the route's own media type)."""
    responses = error_responses(*errors)
    for response in responses.values():
        response.pop("model")
        response["content"]["application/json"]["schema"] = {"$ref": REF_PREFIX + ERROR_SCHEMA}
    return responses


def signed_records(records: list[HazardRecord], media_urls: MediaSigner) -> list[HazardRecord]:
    """`records` with their best frames at signed URLs (AUTH_MODE=keys: a bare /media URL is no credential)."""
    return [replace(record, best_frame_url=media_urls.sign(record.best_frame_url)) for record in records]


def create_hazards_router(tracking: TrackingService, media_urls: MediaSigner) -> APIRouter:
    router = APIRouter(tags=["hazards"])
    session_errors = error_responses(*REQUEST_ERRORS, SessionNotFound, SessionStoreUnavailable)
    geojson_session_errors = json_error_responses(*REQUEST_ERRORS, SessionNotFound, SessionStoreUnavailable)

    async def session_hazards(session_id: str, caller: Principal) -> list[HazardRecord]:
        """The session's records, their photos at signed URLs (AUTH_MODE=keys)."""
        return signed_records(await tracking.session_hazards(session_id, owned_by(caller)), media_urls)

    @router.get("/sessions/{session_id}/hazards", responses=session_errors)
    async def list_session_hazards(session_id: str, caller: MapCaller) -> SessionHazards:
        """The session's confirmed hazards: one record per hazard however many frames saw it."""
        records = await session_hazards(session_id, caller)
        return SessionHazards(session_id=session_id, hazards=[HazardOut.of(record) for record in records])

    @router.get(
        "/sessions/{session_id}/hazards.geojson",
        responses=geojson_session_errors,
        response_class=GeoJSONResponse,
        response_model=SessionHazardCollection,
    )
    async def export_session_hazards(session_id: str, caller: MapCaller) -> GeoJSONResponse:
        """The session's confirmed hazards that have a location, as an RFC 7946 FeatureCollection."""
        records = await session_hazards(session_id, caller)
        collection = SessionHazardCollection.model_validate(geojson.session_collection(session_id, records))
        return GeoJSONResponse(collection.model_dump(mode="json"))

    _add_map_route(router, tracking, media_urls)
    return router


def _add_map_route(router: APIRouter, tracking: TrackingService, media_urls: MediaSigner) -> None:
    @router.get(
        "/hazards",
        responses=json_error_responses(*REQUEST_ERRORS, HazardMapUnavailable),
        response_class=GeoJSONResponse,
        response_model=MapHazardCollection,
    )
    async def list_map_hazards(
        caller: MapCaller,
        bbox: Annotated[
            str | None,
            Query(
                pattern=BBOX_PATTERN,
                description="minLon,minLat,maxLon,maxLat (WGS-84 degrees; not across the antimeridian).",
            ),
        ] = None,
        near: Annotated[str | None, Query(pattern=NEAR_PATTERN, description="lat,lon (WGS-84 degrees).")] = None,
        radius_m: Annotated[
            float | None, Query(gt=0, le=MAX_RADIUS_M, description="With `near`; 100 m by default.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
        tenant: Annotated[
            str | None,
            Query(max_length=200, description="An admin key's or operator's filter; a tenant's key sees its own."),
        ] = None,
    ) -> GeoJSONResponse:
        """The caller's tenant's hazard map: hazards reported by its sessions, merged by class within
        HAZARD_MERGE_METERS (an admin key or operator: every tenant's, or `tenant`'s). Give either `bbox` or `near`
        (with `radius_m`); the answer is an RFC 7946 FeatureCollection."""
        scope = owned_by(caller) or tenant
        found = await tracking.map_hazards(bbox=bbox, near=near, radius_m=radius_m, limit=limit, tenant=scope)
        hazards: list[MapHazard] = [replace(h, best_frame_url=media_urls.sign(h.best_frame_url)) for h in found]
        collection = MapHazardCollection.model_validate(geojson.map_collection(hazards))
        return GeoJSONResponse(collection.model_dump(mode="json"))
