"""The admin API for webhooks: register one (its secret shown once), list, delete, and the dead deliveries an
operator lists and replays. Reading needs an operator of any role; changing needs the admin role, and every change
goes to the audit log with the operator's name (`WebhookAdmin`, shared with the control center's webhooks page).
"""

# No `from __future__ import annotations`: the routes' Annotated dependencies are local to the factory, and
# FastAPI can only resolve string annotations against module globals.
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.http.client_address import ClientAddress
from app.http.openapi import JSON_BODY_ERRORS, REQUEST_ERRORS, error_responses
from app.http.routers.admin import AUTH_ERRORS, CHANGE_ERRORS
from app.http.routers.deps import operator_dependency, role_dependency
from app.http.schemas.webhooks import DeliveryList, DeliveryOut, WebhookCreate, WebhookCreated, WebhookList, WebhookOut
from app.services.core.errors import RegistryUnavailable, WebhookNotFound
from app.services.identity.operators import OperatorAuth
from app.services.identity.roles import Operator, Role
from app.services.registry.outbox import WebhookEvent
from app.services.registry.webhook_admin import WebhookAdmin

READ_ERRORS = (*REQUEST_ERRORS, *AUTH_ERRORS, RegistryUnavailable)
WRITE_ERRORS = (*JSON_BODY_ERRORS, *CHANGE_ERRORS, RegistryUnavailable)
DEFAULT_PORTS = {"http": 80, "https": 443}


def own_addresses(request: Request) -> set[tuple[str, int]]:
    """Where this service is reached (the request's Host) and where it listens: a webhook must not point there."""
    addresses = set()
    if request.url.hostname:
        addresses.add((request.url.hostname, request.url.port or DEFAULT_PORTS.get(request.url.scheme, 80)))
    server = request.scope.get("server")
    if server and server[1] is not None:
        addresses.add((str(server[0]), int(server[1])))
    return addresses


def create_webhooks_router(webhooks: WebhookAdmin, auth: OperatorAuth, client_address: ClientAddress) -> APIRouter:
    operator = operator_dependency(auth, client_address)
    Reader = Annotated[Operator, operator]
    Admin = Annotated[Operator, role_dependency(operator, Role.ADMIN)]
    router = APIRouter(prefix="/admin/api/webhooks", tags=["admin"])

    @router.post("", status_code=201, responses=error_responses(*WRITE_ERRORS))
    async def admin_create_webhook(body: WebhookCreate, who: Admin, request: Request) -> WebhookCreated:
        """Register a URL for hazard events, signed with `Hazard-Signature: t=<unix>,v1=<hex HMAC-SHA-256 of
        "<t>.<body>">`; 422 for a URL that is not http(s) or points at this service itself."""
        events = [WebhookEvent(e) for e in body.events]
        webhook, secret = await webhooks.register(who.name, body.url, events, body.secret, own_addresses(request))
        return WebhookCreated(**WebhookOut.of(webhook).model_dump(), secret=secret)

    @router.get("", responses=error_responses(*READ_ERRORS))
    async def admin_list_webhooks(_: Reader) -> WebhookList:
        return WebhookList(webhooks=[WebhookOut.of(webhook) for webhook in await webhooks.list_webhooks()])

    @router.get("/dead", responses=error_responses(*READ_ERRORS))
    async def admin_list_dead_deliveries(_: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeliveryList:
        """Deliveries out of attempts, newest first."""
        return DeliveryList(deliveries=[DeliveryOut.of(delivery) for delivery in await webhooks.dead(limit)])

    @router.post(
        "/dead/{delivery_id:int}/replay", responses=error_responses(*REQUEST_ERRORS, *CHANGE_ERRORS, WebhookNotFound)
    )
    async def admin_replay_dead_delivery(delivery_id: int, who: Admin) -> DeliveryOut:
        """A dead delivery back in the outbox with a fresh set of attempts, sent at once."""
        delivery = await webhooks.replay(who.name, delivery_id)
        return DeliveryOut.of(delivery)

    @router.delete("/{webhook_id:int}", responses=error_responses(*REQUEST_ERRORS, *CHANGE_ERRORS, WebhookNotFound))
    async def admin_delete_webhook(webhook_id: int, who: Admin) -> WebhookOut:
        """Nothing more is sent to it, pending deliveries included."""
        webhook = await webhooks.delete(who.name, webhook_id)
        return WebhookOut.of(webhook)

    return router
