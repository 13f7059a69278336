"""Session lifecycle routes."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from app.schemas import HistoryPage, SessionCreate, SessionOut
from app.services.sessions.store import SessionStore


def create_sessions_router(sessions: SessionStore, history_limit: int) -> APIRouter:
    router = APIRouter(prefix="/sessions", tags=["sessions"])

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_session(body: Annotated[SessionCreate | None, Body()] = None) -> SessionOut:
        body = body or SessionCreate()
        return SessionOut.of(await sessions.create(body.metadata, body.ttl_seconds))

    @router.get("/{session_id}")
    async def get_session(session_id: str) -> SessionOut:
        return SessionOut.of(await sessions.get(session_id))

    @router.post("/{session_id}/end")
    async def end_session(session_id: str) -> SessionOut:
        return SessionOut.of(await sessions.end(session_id))

    @router.get("/{session_id}/detections")
    async def list_detections(
        session_id: str,
        limit: Annotated[int, Query(ge=1, le=history_limit)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> HistoryPage:
        items, total = await sessions.history(session_id, limit, offset)
        return HistoryPage(session_id=session_id, items=items, total=total, limit=limit, offset=offset)

    return router
