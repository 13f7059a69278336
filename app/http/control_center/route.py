"""How every control center route answers: the login redirect, errors as HTML or the one error shape, and the
pages' security headers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from app.http.control_center.login import HOME_PAGE, LOGIN_PATH, NEXT_PAGE, LoginRequired
from app.http.control_center.rendering import render
from app.http.errors import error_response
from app.services.core.errors import ApiError, Unauthorized

# No inline script or style, nothing from another origin: what the pages load is what the app serves.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def error_answer(request: Request, exc: ApiError) -> Response:
    if is_htmx(request):
        return render(request, "partials/flash.html", {"error": exc}, exc.status)
    if wants_html(request):
        return render(request, "error.html", {"error": exc}, exc.status)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.retry_after)


def login_redirect(request: Request) -> Response:
    if is_htmx(request):  # htmx follows HX-Redirect with a full page load
        return Response(status_code=401, headers={"hx-redirect": LOGIN_PATH})
    if not wants_html(request) or request.method != "GET":
        return error_response(401, Unauthorized.code, "Log in to the control center first.")
    target = request.url.path if NEXT_PAGE.match(request.url.path) else HOME_PAGE
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target)}", status_code=303)


class ControlRoute(APIRoute):
    """Every control center answer goes through `login_redirect`, `error_answer` and the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = login_redirect(request)
            except ApiError as exc:
                response = error_answer(request, exc)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return answer
