"""Session lifecycle routes."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, status

from app.http.auth import DetectCaller, owned_by
from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.schemas.sessions import HistoryItem, HistoryPage, SessionOut, session_create_body
from app.services.core.errors import SessionCreationLimited, SessionNotFound, SessionStoreUnavailable
from app.services.identity.principal import Principal
from app.services.sessions.store import SessionStore
from app.services.uploads.signing import MediaSigner


def creation_payer(caller: Principal, clients: ClientAddress, request: Request) -> str:
    """Whose creation budget a new session comes from: a fleet behind one carrier NAT is many devices, so a key,
    not an address, pays where there is one."""
    return f"key:{caller.key_id}" if caller.key_id is not None else clients.of(request)


def create_sessions_router(
    sessions: SessionStore,
    history_limit: int,
    max_ttl_seconds: int,
    client_address: ClientAddress | None = None,
    media_urls: MediaSigner | None = None,
) -> APIRouter:
    clients = client_address or ClientAddress(None, [])
    router = APIRouter(prefix="/sessions", tags=["sessions"])

    # SessionCreate with this deployment's maximum TTL (the spec states it); built at run time, so not a type to mypy.
    SessionCreateBody = session_create_body(max_ttl_seconds)

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses=error_responses(*JSON_BODY_ERRORS, SessionCreationLimited, SessionStoreUnavailable),
    )
    async def create_session(
        request: Request,
        caller: DetectCaller,
        body: Annotated[SessionCreateBody | None, Body()] = None,  # type: ignore[valid-type]
    ) -> SessionOut:
        """Start a session; frames are sent to `/detect/{session_id}` with the id it answers. Each API key (each
        address, without one) may open SESSION_CREATE_BURST at once, then SESSION_CREATE_RATE_PER_MINUTE (or the
        key's own `sessions_per_minute`), within a TTL budget (429 otherwise). The session is the key's tenant's."""
        body = body or SessionCreateBody()
        payer = creation_payer(caller, clients, request)
        per_minute = caller.limits.sessions_per_minute
        created = await sessions.create(
            body.metadata, body.ttl_seconds, payer, tenant=caller.tenant, sessions_per_minute=per_minute
        )
        return SessionOut.of(created)

    @router.get("/{session_id}", responses=error_responses(*REQUEST_ERRORS, SessionNotFound, SessionStoreUnavailable))
    async def get_session(session_id: str, caller: DetectCaller) -> SessionOut:
        return SessionOut.of(await sessions.get(session_id, owned_by(caller)))

    @router.post(
        "/{session_id}/end", responses=error_responses(*REQUEST_ERRORS, SessionNotFound, SessionStoreUnavailable)
    )
    async def end_session(session_id: str, caller: DetectCaller) -> SessionOut:
        """End it; it stays readable for SESSION_ENDED_GRACE_SECONDS, then expires."""
        return SessionOut.of(await sessions.end(session_id, owned_by(caller)))

    _add_history_route(router, sessions, history_limit, media_urls)
    return router


def _add_history_route(
    router: APIRouter, sessions: SessionStore, history_limit: int, media_urls: MediaSigner | None
) -> None:
    @router.get(
        "/{session_id}/detections",
        responses=error_responses(*REQUEST_ERRORS, SessionNotFound, SessionStoreUnavailable),
        response_model_exclude_none=True,  # `upload.url` only once the frame has landed
    )
    async def list_detections(
        session_id: str,
        caller: DetectCaller,
        limit: Annotated[int, Query(ge=1, le=history_limit)] = 20,
        # The history keeps at most `history_limit` entries: past that every page is empty.
        offset: Annotated[int, Query(ge=0, le=history_limit)] = 0,
    ) -> HistoryPage:
        """The session's detection history, newest first."""
        items, total = await sessions.history(session_id, limit, offset, owned_by(caller))
        return HistoryPage(
            session_id=session_id,
            items=[signed(HistoryItem.model_validate(item), media_urls) for item in items],
            total=total,
            limit=limit,
            offset=offset,
        )


def signed(item: HistoryItem, media_urls: MediaSigner | None) -> HistoryItem:
    """`item` with its frame's URL signed (AUTH_MODE=keys: a bare /media URL is no credential)."""
    if media_urls is not None:
        item.upload.url = media_urls.sign(item.upload.url)
    return item
