"""The control center: login-protected, server-rendered pages under /admin (not part of the documented API).

Pages and their htmx fragments are rendered here from `ControlCenter`'s plain data; every asset is served by the
app (`/static/control`), so the pages work with no internet. Sign-in: a signed, HttpOnly, SameSite=Strict cookie
naming a session in Redis (`services/operator_sessions.py`); POSTs must come from these pages (Origin /
Sec-Fetch-Site) and carry the session's CSRF token (`X-CSRF-Token`, or a `csrf_token` form field).
"""

# No `from __future__ import annotations` here: the routes' Annotated dependencies are local to the factory,
# and FastAPI can only resolve string annotations against module globals.
import math
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.http.client_address import ClientAddress
from app.http.errors import error_response
from app.services.core.errors import (
    AdminDisabled,
    ApiError,
    CrossSiteRequestRefused,
    TooManyLoginAttempts,
    Unauthorized,
    ValidationFailed,
)
from app.services.fleet.control_center import MODEL_ACTIONS, STATE_LABELS, ControlCenter
from app.services.identity.operator_sessions import OperatorSession, OperatorSessions, is_same_origin
from app.services.identity.operators import OperatorAuth

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
SESSION_COOKIE = "hazard_admin"
SESSION_COOKIE_PATH = "/admin"
LOGIN_COOKIE = "hazard_admin_login"
LOGIN_PATH = "/admin/login"
LOGIN_COOKIE_SECONDS = 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_FIELD_CHARS = 1024  # user name and password: longer is wrong, and never worth an argon2 run on megabytes
NEXT_PAGE = re.compile(r"^/admin(/(jobs|sessions))?$")
JOBS_SHOWN = 50
SESSIONS_SHOWN = 100
# No inline script or style, nothing from another origin: what the pages load is what the app serves.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class LoginRequired(Exception):
    """No live operator session: a page redirects to the login form, a fragment or JSON read answers 401."""


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (
        f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"
    )


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["when"] = _when
    templates.env.filters["duration"] = _duration
    templates.env.globals["state_label"] = lambda state: STATE_LABELS.get(str(state), str(state).upper())
    return templates


def create_ui_router(
    center: ControlCenter,
    sessions: OperatorSessions,
    auth: OperatorAuth,
    client_address: ClientAddress,
    *,
    secure_cookies: bool,
) -> APIRouter:
    templates = _templates()

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def error_answer(request: Request, exc: ApiError) -> Response:
        if _is_htmx(request):
            return page(request, "control/partials/flash.html", {"error": exc}, exc.status)
        if _wants_html(request):
            return page(request, "control/error.html", {"error": exc}, exc.status)
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.retry_after)

    def login_redirect(request: Request) -> Response:
        if _is_htmx(request):  # htmx follows HX-Redirect with a full page load
            return Response(status_code=401, headers={"hx-redirect": LOGIN_PATH})
        if not _wants_html(request) or request.method != "GET":
            return error_response(401, Unauthorized.code, "Log in to the control center first.")
        target = request.url.path if NEXT_PAGE.match(request.url.path) else "/admin"
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target)}", status_code=303)

    class ControlRoute(APIRoute):
        """Every control center answer: the login redirect, errors as HTML or the one error shape, and the
        pages' security headers."""

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

    router = APIRouter(prefix="/admin", include_in_schema=False, route_class=ControlRoute)

    async def operator(request: Request) -> OperatorSession:
        session = await sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise LoginRequired
        return session

    Operator = Annotated[OperatorSession, Depends(operator)]

    def require_same_origin(request: Request) -> None:
        if not is_same_origin(
            request.headers.get("host"), request.headers.get("origin"), request.headers.get("sec-fetch-site")
        ):
            raise CrossSiteRequestRefused(details={"origin": request.headers.get("origin")})

    async def checked_post(request: Request) -> OperatorSession:
        """A state-changing request: from these pages (checked first: a cross-site request is refused as such,
        whether or not the browser sent the cookie), by a logged-in operator, with this session's CSRF token."""
        require_same_origin(request)
        session = await operator(request)
        token = request.headers.get(CSRF_HEADER)
        if token is None:
            field = (await request.form()).get(CSRF_FIELD)
            token = field if isinstance(field, str) else None
        if not sessions.csrf_ok(session, token):
            raise CrossSiteRequestRefused("Missing or wrong CSRF token: reload the page.")
        return session

    CheckedPost = Annotated[OperatorSession, Depends(checked_post)]

    def view(session: OperatorSession, active: str, **context: Any) -> dict[str, Any]:
        """A full page's context: the CSRF token its htmx requests send, and which page the nav marks."""
        return {"csrf_token": session.csrf_token, "active_page": active, **context}

    # --- Login and logout ------------------------------------------------------------------------------------

    def login_form(
        request: Request, next_page: str, *, error: str | None = None, status: int = 200, nonce: str | None = None
    ) -> HTMLResponse:
        fresh = nonce is None
        nonce = nonce or sessions.new_login_nonce()
        context = {"login_token": sessions.login_token(nonce), "next_page": next_page, "error": error}
        response = page(request, "control/login.html", context, status)
        if fresh:
            response.set_cookie(
                LOGIN_COOKIE,
                nonce,
                max_age=LOGIN_COOKIE_SECONDS,
                path=LOGIN_PATH,
                httponly=True,
                samesite="strict",
                secure=secure_cookies,
            )
        return response

    @router.get("/login")
    async def login_page(request: Request, next: str = "/admin") -> Response:
        next_page = next if NEXT_PAGE.match(next) else "/admin"
        if await sessions.find(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse(next_page, status_code=303)
        if not auth.enabled:
            return error_answer(request, AdminDisabled(details={"reason": auth.disabled_reason}))
        return login_form(request, next_page)

    @router.post("/login")
    async def login(request: Request) -> Response:
        require_same_origin(request)
        form = await request.form()
        fields = {key: value if isinstance(value, str) else "" for key, value in form.items()}
        next_page = fields.get("next", "/admin")
        next_page = next_page if NEXT_PAGE.match(next_page) else "/admin"
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not sessions.login_token_ok(nonce, fields.get(CSRF_FIELD)):
            # No (or another browser's) login form behind this POST: a new form, nothing counted.
            return login_form(request, next_page, error="The login form expired. Please try again.", status=403)
        user, password = fields.get("username", ""), fields.get("password", "")
        try:
            if len(user) > MAX_FIELD_CHARS or len(password) > MAX_FIELD_CHARS:
                raise ValidationFailed
            await auth.check_login(user, password, client_address.of(request))
        except (Unauthorized, ValidationFailed):
            # One message whatever was wrong: the page never says whether it was the user or the password.
            return login_form(request, next_page, error="Wrong user name or password.", status=401, nonce=nonce)
        except TooManyLoginAttempts as exc:
            wait = max(1, math.ceil(exc.retry_after or 1))
            throttled = login_form(
                request, next_page, error=f"Too many failed logins: wait {wait} s.", status=429, nonce=nonce
            )
            throttled.headers["retry-after"] = str(wait)
            return throttled
        cookie, _ = await sessions.open()
        response = RedirectResponse(next_page, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=sessions.lifetime_seconds,
            path=SESSION_COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
        )
        response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH, httponly=True, samesite="strict", secure=secure_cookies)
        return response

    @router.post("/logout")
    async def logout(request: Request, _: CheckedPost) -> Response:
        await sessions.revoke(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path=SESSION_COOKIE_PATH, httponly=True, samesite="strict", secure=secure_cookies
        )
        return response

    # --- Pages -----------------------------------------------------------------------------------------------

    @router.get("")
    async def dashboard(request: Request, session: Operator) -> HTMLResponse:
        models = await center.models()
        context = view(session, "dashboard", models=models, diagnostics=await center.diagnostics())
        return page(request, "control/dashboard.html", context)

    @router.get("/jobs")
    async def jobs_page(request: Request, session: Operator) -> HTMLResponse:
        return page(request, "control/jobs.html", view(session, "jobs", **await jobs_context()))

    @router.get("/sessions")
    async def sessions_page(request: Request, session: Operator) -> HTMLResponse:
        return page(request, "control/sessions.html", view(session, "sessions", **await sessions_context()))

    # --- Fragments (htmx) and data ---------------------------------------------------------------------------

    @router.get("/partials/diagnostics")
    async def diagnostics(request: Request, _: Operator) -> HTMLResponse:
        return page(request, "control/partials/diagnostics.html", {"diagnostics": await center.diagnostics()})

    @router.get("/partials/models")
    async def models(request: Request, session: Operator) -> HTMLResponse:
        context = {"models": await center.models(), "csrf_token": session.csrf_token}
        return page(request, "control/partials/models.html", context)

    @router.post("/models/{name}/{action}")
    async def act_on_model(request: Request, name: str, action: str, session: CheckedPost) -> HTMLResponse:
        if action not in MODEL_ACTIONS:
            raise ValidationFailed("No such model action.", details={"action": action, "accepted": MODEL_ACTIONS})
        flash: dict[str, Any] = {"message": f"{action.capitalize()} {name}: done."}
        status = 200
        try:
            await center.act_on_model(action, name)
        except ApiError as exc:  # shown in the panel, beside the version's state and reason
            flash, status = {"error": exc, "message": f"{action.capitalize()} {name} failed"}, exc.status
        context = {"models": await center.models(), "csrf_token": session.csrf_token, "flash": flash}
        return page(request, "control/partials/models.html", context, status)

    @router.post("/fleet/reload")
    async def reload_worker(request: Request, session: CheckedPost) -> HTMLResponse:
        form = await request.form()
        target = form.get("process_id")
        process_id = target if isinstance(target, str) and target not in ("", "*") else None
        flash: dict[str, Any] = {"message": f"Reload sent to {process_id or 'every process'}."}
        status = 200
        try:
            await center.reload(process_id, None)
        except ApiError as exc:
            flash, status = {"error": exc, "message": "Reload failed"}, exc.status
        return page(request, "control/partials/reload.html", {"flash": flash}, status)

    async def jobs_context() -> dict[str, Any]:
        try:
            return {"jobs": await center.jobs(JOBS_SHOWN)}
        except ApiError as exc:
            return {"jobs": [], "unavailable": exc}

    @router.get("/partials/jobs")
    async def jobs(request: Request, session: Operator) -> HTMLResponse:
        context = {"csrf_token": session.csrf_token, **await jobs_context()}
        return page(request, "control/partials/jobs.html", context)

    @router.post("/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str, session: CheckedPost) -> HTMLResponse:
        flash: dict[str, Any] = {"message": f"Job {job_id} cancelled."}
        status = 200
        try:
            await center.cancel_job(job_id)
        except ApiError as exc:
            flash, status = {"error": exc, "message": f"Cancelling {job_id} failed"}, exc.status
        context = {"csrf_token": session.csrf_token, "flash": flash, **await jobs_context()}
        return page(request, "control/partials/jobs.html", context, status)

    async def sessions_context() -> dict[str, Any]:
        try:
            return {"listing": await center.live_sessions(SESSIONS_SHOWN)}
        except ApiError as exc:
            return {"listing": None, "unavailable": exc}

    @router.get("/partials/sessions")
    async def live_sessions(request: Request, _: Operator) -> HTMLResponse:
        return page(request, "control/partials/sessions.html", await sessions_context())

    @router.get("/partials/sessions/{session_id}/hazards")
    async def session_hazards(request: Request, session_id: str, _: Operator) -> HTMLResponse:
        hazards = await center.session_hazards(session_id)
        return page(request, "control/partials/hazards.html", {"session_id": session_id, "hazards": hazards})

    @router.get("/latency.json")
    async def latency(_: Operator) -> JSONResponse:
        return JSONResponse(center.latency())

    return router
