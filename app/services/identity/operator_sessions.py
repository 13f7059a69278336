"""Operator sessions of the control center: a signed cookie naming a session kept in Redis, and its CSRF token.

The cookie holds a random session id and its HMAC (`<id>.<signature>`): a forged or altered cookie is refused
before Redis is asked. Redis holds `admin-session:{<fleet>}:<sha256 of the id>` (so a copy of Redis yields no
usable cookie) with the session's CSRF token, expiring with the session (ADMIN_SESSION_HOURS, not sliding).
Logout deletes it: the cookie then names nothing, wherever it was copied to. State-changing requests must come
from the control center's own pages (Origin / Sec-Fetch-Site) and carry the session's CSRF token; the login
form, which has no session yet, carries an HMAC of a pre-login cookie instead (double submit: a cross-site
page can neither read that cookie nor, with SameSite=Strict, make the browser send it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import structlog

from app.services.core.errors import OperatorSessionUnavailable
from app.services.core.redis_client import REDIS_FAILURES
from app.services.core.types import RedisClient
from app.services.identity.roles import ADMIN_USER, Role

log = structlog.get_logger(__name__)

SESSION_ID_BYTES = 32
CSRF_TOKEN_BYTES = 32
LOGIN_NONCE_BYTES = 24
SECRET_BYTES = 32
MAX_COOKIE_CHARS = 256


@dataclass(frozen=True)
class OperatorSession:
    csrf_token: str
    created_at: float
    expires_at: float
    operator: str = ADMIN_USER  # who signed in (sessions from before named accounts were the built-in admin's)
    role: Role = Role.ADMIN  # as the login flow last resolved it (`OperatorAuth.current`), not as stored


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def is_same_origin(host: str | None, origin: str | None, fetch_site: str | None) -> bool:
    """A browser names where a request comes from: `Origin` (every POST) and `Sec-Fetch-Site`. Either, when sent,
    must say "this site's own pages"; a client that sends neither is not a browser a page could drive."""
    if fetch_site is not None and fetch_site.lower() != "same-origin":
        return False
    if origin is None:
        return True
    if host is None or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class OperatorSessions:
    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str,
        lifetime_seconds: float,
        secret: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self.lifetime_seconds = int(lifetime_seconds)
        if secret is None:
            log.info("admin_session_secret_generated", effect="control center logins end when this process restarts")
        self._key = hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(SECRET_BYTES)
        self._clock = clock

    def _redis_key(self, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"admin-session:{{{self._namespace}}}:{digest}"

    def _signature(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    def _session_id(self, cookie: str | None) -> str | None:
        """The id a cookie names, if its signature is ours."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        session_id, _, signature = cookie.partition(".")
        if not session_id or not hmac.compare_digest(signature, self._signature("session", session_id)):
            return None
        return session_id

    async def open(self, operator: str = ADMIN_USER) -> tuple[str, OperatorSession]:
        """A new session (never one the browser brought: no fixation); returns the cookie value and the session."""
        session_id = _b64(secrets.token_bytes(SESSION_ID_BYTES))
        now = self._clock()
        csrf = _b64(secrets.token_bytes(CSRF_TOKEN_BYTES))
        session = OperatorSession(csrf, now, now + self.lifetime_seconds, operator)
        fields = {"csrf": csrf, "created_at": repr(now), "expires_at": repr(session.expires_at), "operator": operator}
        try:
            async with self._redis.pipeline(transaction=True) as pipe:  # one key: cluster-safe
                pipe.hset(self._redis_key(session_id), mapping=fields)
                pipe.expire(self._redis_key(session_id), self.lifetime_seconds)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            raise OperatorSessionUnavailable(details={"reason": type(exc).__name__}) from exc
        log.info("admin_login", operator=operator, expires_at=session.expires_at)
        return f"{session_id}.{self._signature('session', session_id)}", session

    async def find(self, cookie: str | None) -> OperatorSession | None:
        """The live session a cookie names; None for no cookie, a forged one, or one expired or logged out."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        try:
            fields = await cast(Awaitable[dict[str, str]], self._redis.hgetall(self._redis_key(session_id)))
        except REDIS_FAILURES as exc:
            raise OperatorSessionUnavailable(details={"reason": type(exc).__name__}) from exc
        if not fields.get("csrf"):
            return None
        session = OperatorSession(
            fields["csrf"], float(fields["created_at"]), float(fields["expires_at"]), fields.get("operator", ADMIN_USER)
        )
        return session if session.expires_at > self._clock() else None

    async def revoke(self, cookie: str | None) -> None:
        """Logout: the session is deleted, so its cookie names nothing any more, wherever it was copied to."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return
        try:
            await self._redis.delete(self._redis_key(session_id))
        except REDIS_FAILURES as exc:
            raise OperatorSessionUnavailable(details={"reason": type(exc).__name__}) from exc
        log.info("admin_logout")

    @staticmethod
    def csrf_ok(session: OperatorSession, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), session.csrf_token.encode())

    @staticmethod
    def new_login_nonce() -> str:
        return _b64(secrets.token_bytes(LOGIN_NONCE_BYTES))

    def login_token(self, nonce: str) -> str:
        """The login form's CSRF token: bound to the pre-login cookie `nonce` the same browser holds."""
        return self._signature("login", nonce)

    def login_token_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or len(nonce) > MAX_COOKIE_CHARS:
            return False
        return hmac.compare_digest(token.encode(), self.login_token(nonce).encode())
