"""The control center: login-protected, server-rendered pages under /admin (not part of the documented API).

Pages and their htmx fragments are rendered from `ControlCenter`'s plain data; every asset is served by the app
(`/static/control`), so the pages work with no internet. POSTs must come from these pages (Origin /
Sec-Fetch-Site) and carry the session's CSRF token (`X-CSRF-Token`, or a `csrf_token` form field).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles

from app.http.client_address import ClientAddress
from app.http.control_center.fragments import add_fragments
from app.http.control_center.identity_pages import add_identity_pages
from app.http.control_center.login import SignIn, add_login_routes
from app.http.control_center.map_page import add_map_page
from app.http.control_center.pages import add_pages
from app.http.control_center.rendering import STATIC_DIR, STATIC_URL
from app.http.control_center.route import ControlRoute
from app.http.control_center.webhooks_page import add_webhooks_page
from app.services.fleet.control_center import ControlCenter
from app.services.identity.accounts import OperatorAccounts
from app.services.identity.audit import AuditLog
from app.services.identity.keys import KeyStore
from app.services.identity.operator_sessions import OperatorSessions
from app.services.identity.operators import OperatorAuth
from app.services.registry.exports import HazardExports
from app.services.registry.store import HazardRegistry
from app.services.registry.webhook_admin import WebhookAdmin
from app.services.uploads.signing import MediaSigner


def create_control_center_router(
    center: ControlCenter,
    sessions: OperatorSessions,
    auth: OperatorAuth,
    client_address: ClientAddress,
    identity: tuple[KeyStore, OperatorAccounts, AuditLog],
    *,
    secure_cookies: bool,
    media_urls: MediaSigner,
    registry: tuple[HazardRegistry, HazardExports] | None = None,
    webhooks: WebhookAdmin | None = None,
    map_tile_url: str | None = None,
) -> APIRouter:
    """`identity`: the key store, operator accounts and audit log behind the keys, operators and audit pages.
    Viewers and inspectors read; every action needs the admin role (the operators and webhooks pages: seeing them
    too); inspectors also give verdicts on the map page. `media_urls`: the frames and photos shown are at signed URLs
    (AUTH_MODE=keys)."""
    keys, accounts, audit = identity
    sign_in = SignIn(sessions, auth, client_address, secure_cookies=secure_cookies)
    admin = APIRouter(prefix="/admin", include_in_schema=False, route_class=ControlRoute)
    add_login_routes(admin, sign_in)
    add_pages(admin, center, sign_in.operator)
    add_fragments(admin, center, audit, (sign_in.operator, sign_in.admin_post), media_urls)
    add_identity_pages(admin, keys, accounts, audit, (sign_in.operator, sign_in.admin_page, sign_in.admin_post))
    if registry is not None:
        add_map_page(admin, registry, (sign_in.operator, sign_in.inspector_post), map_tile_url, media_urls)
    if webhooks is not None:
        add_webhooks_page(admin, webhooks, sign_in.admin_page, sign_in.admin_post)
    router = APIRouter()
    router.include_router(admin)
    # Before the docs router's `/static` mount (which would answer 404 for these): include this router first.
    router.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="control_static")
    return router
