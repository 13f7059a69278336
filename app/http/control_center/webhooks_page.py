"""The webhooks page (admins only): the registered webhooks, registering one (the admin API's rules: an http(s)
URL that is not this service itself, its secret shown once), deleting one, the newest deliveries and the dead
letters, replayed from here. Every change goes through `WebhookAdmin`, as the admin API's do, into the audit log."""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to `add_webhooks_page`, and
# FastAPI can only resolve string annotations against module globals.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from app.http.control_center.fragments import OperatorCheck
from app.http.control_center.identity_pages import attempt, form_text
from app.http.control_center.presenters import page_context
from app.http.control_center.rendering import render
from app.http.routers.webhooks import own_addresses
from app.http.schemas.webhooks import WebhookCreate
from app.services.core.errors import ValidationFailed
from app.services.identity.operator_sessions import OperatorSession
from app.services.registry.outbox import WebhookEvent
from app.services.registry.webhook_admin import WebhookAdmin
from app.services.registry.webhooks import Webhook

DELIVERIES_SHOWN = 50
DEAD_SHOWN = 100


def webhook_form(form: FormData) -> WebhookCreate:
    """The form read by the admin API's body model, so both refuse the same things (422 naming the field)."""
    events = [value for value in form.getlist("events") if isinstance(value, str)]
    try:
        return WebhookCreate(url=form_text(form, "url"), events=events, secret=form_text(form, "secret") or None)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise ValidationFailed(f"{field}: {problem['msg']}", details={"field": field}) from None


def add_webhooks_page(
    router: APIRouter, webhooks: WebhookAdmin, admin_page: OperatorCheck, admin_post: OperatorCheck
) -> None:
    AdminPage = Annotated[OperatorSession, Depends(admin_page)]
    AdminPost = Annotated[OperatorSession, Depends(admin_post)]

    async def webhooks_context(session: OperatorSession, **extra: Any) -> dict[str, Any]:
        return {
            "csrf_token": session.csrf_token,
            "webhooks": await webhooks.list_webhooks(),
            "deliveries": await webhooks.recent(DELIVERIES_SHOWN),
            "dead": await webhooks.dead(DEAD_SHOWN),
            "event_names": [event.value for event in WebhookEvent],
            **extra,
        }

    async def panel(
        request: Request, session: OperatorSession, flash: dict[str, Any], status: int, **extra: Any
    ) -> HTMLResponse:
        context = await webhooks_context(session, flash=flash, **extra)
        return render(request, "partials/webhooks.html", context, status)

    @router.get("/webhooks")
    async def webhooks_page(request: Request, session: AdminPage) -> HTMLResponse:
        context = page_context(session, "webhooks", **await webhooks_context(session))
        return render(request, "webhooks.html", context)

    @router.post("/webhooks")
    async def register_webhook(request: Request, session: AdminPost) -> HTMLResponse:
        form = await request.form()

        async def register() -> tuple[Webhook, str]:
            body = webhook_form(form)
            events = [WebhookEvent(name) for name in body.events]
            return await webhooks.register(session.operator, body.url, events, body.secret, own_addresses(request))

        created, flash, status = await attempt(register(), "Webhook registered.", "Registering the webhook failed")
        return await panel(request, session, flash, status, created=created)

    @router.post("/webhooks/{webhook_id:int}/delete")
    async def delete_webhook(request: Request, webhook_id: int, session: AdminPost) -> HTMLResponse:
        action = webhooks.delete(session.operator, webhook_id)
        _, flash, status = await attempt(action, f"Webhook {webhook_id} deleted.", "Deleting failed")
        return await panel(request, session, flash, status)

    @router.post("/webhooks/dead/{delivery_id:int}/replay")
    async def replay_delivery(request: Request, delivery_id: int, session: AdminPost) -> HTMLResponse:
        action = webhooks.replay(session.operator, delivery_id)
        _, flash, status = await attempt(action, f"Delivery {delivery_id} sent again.", "Replaying failed")
        return await panel(request, session, flash, status)
