"""Signing in and out: the login form and its own cookie, the session cookie, throttled failed logins, and the
checks every state-changing POST passes (same origin, then a live session, then its CSRF token).

The session cookie is signed, HttpOnly and SameSite=Strict, naming a session in Redis (`OperatorSessions`).
"""

# No `from __future__ import annotations`: FastAPI reads these methods' signatures as endpoints and dependencies.
import dataclasses
import math
import re

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.http.client_address import ClientAddress
from app.http.control_center.rendering import render
from app.services.core.errors import (
    AdminDisabled,
    CrossSiteRequestRefused,
    TooManyLoginAttempts,
    Unauthorized,
    ValidationFailed,
)
from app.services.identity.operator_sessions import OperatorSession, OperatorSessions, is_same_origin
from app.services.identity.operators import OperatorAuth
from app.services.identity.roles import Operator, Role, require_operator_role

SESSION_COOKIE = "hazard_admin"
SESSION_COOKIE_PATH = "/admin"
LOGIN_COOKIE = "hazard_admin_login"
LOGIN_PATH = "/admin/login"
LOGIN_COOKIE_SECONDS = 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_FIELD_CHARS = 1024  # user name and password: longer is wrong, and never worth an argon2 run on megabytes
NEXT_PAGE = re.compile(r"^/admin(/(jobs|sessions|keys|operators|webhooks|audit|map))?$")
HOME_PAGE = "/admin"


class LoginRequired(Exception):
    """No live operator session: a page redirects to the login form, a fragment or JSON read answers 401."""


def next_page_or_home(page: str) -> str:
    """Where to go after signing in: one of the pages, never an address the request chose freely."""
    return page if NEXT_PAGE.match(page) else HOME_PAGE


def require_same_origin(request: Request) -> None:
    if not is_same_origin(
        request.headers.get("host"), request.headers.get("origin"), request.headers.get("sec-fetch-site")
    ):
        raise CrossSiteRequestRefused(details={"origin": request.headers.get("origin")})


class SignIn:
    """The login flow's endpoints, and the dependencies that say who is signed in."""

    def __init__(
        self, sessions: OperatorSessions, auth: OperatorAuth, client_address: ClientAddress, *, secure_cookies: bool
    ) -> None:
        self.sessions = sessions
        self.auth = auth
        self.client_address = client_address
        self.secure_cookies = secure_cookies

    async def operator(self, request: Request) -> OperatorSession:
        """The live session, with its operator's role as it is now: a disabled or removed account is signed out."""
        session = await self.sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise LoginRequired
        current = await self.auth.current(session.operator)
        if current is None:
            await self.sessions.revoke(request.cookies.get(SESSION_COOKIE))
            raise LoginRequired
        return dataclasses.replace(session, role=current.role)

    async def admin_post(self, request: Request) -> OperatorSession:
        """A state-changing request (`checked_post`) by an operator with the admin role, else 403 ROLE_REQUIRED."""
        session = await self.checked_post(request)
        require_operator_role(Operator(session.operator, session.role), Role.ADMIN)
        return session

    async def inspector_post(self, request: Request) -> OperatorSession:
        """A verdict on a hazard (`checked_post`) by an inspector or an admin, else 403 ROLE_REQUIRED."""
        session = await self.checked_post(request)
        require_operator_role(Operator(session.operator, session.role), Role.INSPECTOR)
        return session

    async def admin_page(self, request: Request) -> OperatorSession:
        """A page only the admin role may see (the operators page)."""
        session = await self.operator(request)
        require_operator_role(Operator(session.operator, session.role), Role.ADMIN)
        return session

    async def checked_post(self, request: Request) -> OperatorSession:
        """A state-changing request: from these pages (checked first: a cross-site request is refused as such,
        whether or not the browser sent the cookie), by a logged-in operator, with this session's CSRF token."""
        require_same_origin(request)
        session = await self.operator(request)
        token = request.headers.get(CSRF_HEADER)
        if token is None:
            field = (await request.form()).get(CSRF_FIELD)
            token = field if isinstance(field, str) else None
        if not self.sessions.csrf_ok(session, token):
            raise CrossSiteRequestRefused("Missing or wrong CSRF token: reload the page.")
        return session

    async def login_page(self, request: Request, next: str = HOME_PAGE) -> Response:
        next_page = next_page_or_home(next)
        if await self.sessions.find(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse(next_page, status_code=303)
        if not self.auth.enabled:
            raise AdminDisabled(details={"reason": self.auth.disabled_reason})
        return self.login_form(request, next_page)

    async def login(self, request: Request) -> Response:
        require_same_origin(request)
        form = await request.form()
        fields = {key: value if isinstance(value, str) else "" for key, value in form.items()}
        next_page = next_page_or_home(fields.get("next", HOME_PAGE))
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not self.sessions.login_token_ok(nonce, fields.get(CSRF_FIELD)):
            # No (or another browser's) login form behind this POST: a new form, nothing counted.
            return self.login_form(request, next_page, error="The login form expired. Please try again.", status=403)
        user, password = fields.get("username", ""), fields.get("password", "")
        try:
            if len(user) > MAX_FIELD_CHARS or len(password) > MAX_FIELD_CHARS:
                raise ValidationFailed
            operator = await self.auth.check_login(user, password, self.client_address.of(request))
        except (Unauthorized, ValidationFailed):
            # One message whatever was wrong: the page never says whether it was the user or the password.
            return self.login_form(request, next_page, error="Wrong user name or password.", status=401, nonce=nonce)
        except TooManyLoginAttempts as exc:
            wait = max(1, math.ceil(exc.retry_after or 1))
            error = f"Too many failed logins: wait {wait} s."
            throttled = self.login_form(request, next_page, error=error, status=429, nonce=nonce)
            throttled.headers["retry-after"] = str(wait)
            return throttled
        return await self.signed_in(next_page, operator.name)

    async def logout(self, request: Request) -> Response:
        await self.sessions.revoke(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path=SESSION_COOKIE_PATH, httponly=True, samesite="strict", secure=self.secure_cookies
        )
        return response

    def login_form(
        self, request: Request, next_page: str, *, error: str | None = None, status: int = 200, nonce: str | None = None
    ) -> HTMLResponse:
        """The form, with a token bound to this browser's login cookie (a new one unless `nonce` is kept)."""
        fresh = nonce is None
        nonce = nonce or self.sessions.new_login_nonce()
        context = {"login_token": self.sessions.login_token(nonce), "next_page": next_page, "error": error}
        response = render(request, "login.html", context, status)
        if fresh:
            response.set_cookie(
                LOGIN_COOKIE,
                nonce,
                max_age=LOGIN_COOKIE_SECONDS,
                path=LOGIN_PATH,
                httponly=True,
                samesite="strict",
                secure=self.secure_cookies,
            )
        return response

    async def signed_in(self, next_page: str, operator: str) -> Response:
        """A new session: its cookie set, the login form's cookie gone, on to the page asked for."""
        cookie, _ = await self.sessions.open(operator)
        response = RedirectResponse(next_page, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=self.sessions.lifetime_seconds,
            path=SESSION_COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )
        response.delete_cookie(
            LOGIN_COOKIE, path=LOGIN_PATH, httponly=True, samesite="strict", secure=self.secure_cookies
        )
        return response


def add_login_routes(router: APIRouter, sign_in: SignIn) -> None:
    router.add_api_route("/login", sign_in.login_page, methods=["GET"])
    router.add_api_route("/login", sign_in.login, methods=["POST"])
    router.add_api_route("/logout", sign_in.logout, methods=["POST"], dependencies=[Depends(sign_in.checked_post)])
