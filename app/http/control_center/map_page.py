"""The map page: the hazard registry on a Leaflet map (tiles from MAP_TILE_URL, or a plain background), filters,
and an inspector's verdict on the hazard clicked. The markers come from `/admin/map/hazards` (compact points,
streamed: what the map draws and nothing more), a clicked hazard from the registry's API routes; a verdict is posted
here, with the page's CSRF token, and recorded under the operator's name."""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to `add_map_page`, and
# FastAPI can only resolve string annotations against module globals.
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from app.http.control_center.presenters import page_context
from app.http.control_center.rendering import render
from app.http.control_center.route import SECURITY_HEADERS
from app.http.routers.registry import StatusName, parse_hazard_id, parse_since, signed, streamed
from app.http.schemas.registry import CloseIn, RegistryHazard, VerdictIn
from app.services.identity.operator_sessions import OperatorSession
from app.services.identity.roles import Role
from app.services.registry.exports import HazardExports
from app.services.registry.lifecycle import Status
from app.services.registry.records import HazardFilter
from app.services.registry.store import HazardRegistry
from app.services.uploads.signing import MediaSigner

OperatorCheck = Callable[[Request], Awaitable[OperatorSession]]


def map_security_policy(tile_url: str | None) -> str:
    """The pages' policy, with the tile server's origin allowed for images when there is one."""
    policy = SECURITY_HEADERS["content-security-policy"]
    if tile_url is None:
        return policy
    parts = urlsplit(tile_url.replace("{s}", "a"))
    origin = f"{parts.scheme}://{parts.netloc}".replace("://a.", "://*.")
    return policy.replace("img-src 'self'", f"img-src 'self' {origin}")


def add_map_page(
    router: APIRouter,
    registry: tuple[HazardRegistry, HazardExports],
    checks: tuple[OperatorCheck, OperatorCheck],
    tile_url: str | None,
    media_urls: MediaSigner,
) -> None:
    """`checks`: the operator's login, and the guard of a verdict (an inspector's or an admin's). The hazard
    answered after a verdict has its photo at a signed URL (AUTH_MODE=keys), as `/hazards/{id}` gives it."""
    operator, checked_post = checks
    Operator = Annotated[OperatorSession, Depends(operator)]
    CheckedPost = Annotated[OperatorSession, Depends(checked_post)]
    policy = map_security_policy(tile_url)
    store, exports = registry

    @router.get("/map")
    async def map_page(request: Request, session: Operator) -> HTMLResponse:
        context = page_context(session, "map", tile_url=tile_url or "", can_judge=session.role != Role.VIEWER)
        response = render(request, "map.html", context)
        response.headers["content-security-policy"] = policy
        return response

    @router.get("/map/hazards")
    async def map_points(
        _: Operator,
        status: Annotated[StatusName | None, Query()] = None,
        label: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[str | None, Query(max_length=64)] = None,
    ) -> StreamingResponse:
        """Every tenant's hazards matching the filters, as `[id, lat, lon, label, status]` rows (an operator's view)."""
        where = HazardFilter(
            status=None if status is None else Status(status),
            label=label,
            since=None if since is None else parse_since(since),
        )
        return StreamingResponse(await streamed(exports.points(where)), media_type="application/json")

    @router.post("/map/hazards/{hazard_id}/verdict")
    async def map_verdict(hazard_id: str, body: VerdictIn, session: CheckedPost) -> RegistryHazard:
        record = await store.give_verdict(
            parse_hazard_id(hazard_id), actor=session.operator, category=body.category.value, note=body.note
        )
        return RegistryHazard.of(signed(record, media_urls))

    @router.post("/map/hazards/{hazard_id}/close")
    async def map_close(hazard_id: str, body: CloseIn, session: CheckedPost) -> RegistryHazard:
        record = await store.close(parse_hazard_id(hazard_id), actor=session.operator, note=body.note)
        return RegistryHazard.of(signed(record, media_urls))
