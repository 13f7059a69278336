"""What operators use, in an API process only: their authentication, their login sessions, the control
center's services (built on the process's one Redis client, registry and job service) and webhook management (the
admin API's and the control center's, audited)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from app.services.fleet.control_center import ControlCenter
from app.services.identity.operator_sessions import OperatorSessions
from app.services.identity.operators import OperatorAuth
from app.services.registry.webhook_admin import WebhookAdmin
from app.services.sessions.listing import SessionLister
from app.settings import Settings
from app.wiring.identity import Identity
from app.wiring.parts import Parts

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Operators:
    auth: OperatorAuth
    sessions: OperatorSessions
    center: ControlCenter
    webhooks: WebhookAdmin  # registering, deleting and replaying, each change in the audit log
    secure_cookies: bool  # Secure cookies everywhere but local development and tests (plain http there)


def build_operators(settings: Settings, parts: Parts, identity: Identity) -> Operators:
    """`identity`'s named operator accounts log in beside the built-in `admin`; its audit log records changes."""
    redis = parts.redis
    auth = OperatorAuth(
        redis.client,
        namespace=settings.fleet.name,
        environment=settings.environment,
        password_hash=_secret(settings.admin.password_hash),
        password=_secret(settings.admin.password),
        token=_secret(settings.admin.token),
        max_failures=settings.admin.login_max_failures,
        window_seconds=settings.admin.login_window_seconds,
        accounts=identity.accounts,
    )
    sessions = OperatorSessions(
        redis.client,
        namespace=settings.fleet.name,
        lifetime_seconds=settings.admin.session_hours * SECONDS_PER_HOUR,
        secret=_secret(settings.admin.session_secret),
    )
    center = ControlCenter(
        parts.fleet.model_control,
        parts.jobs.service,
        parts.active_sessions,
        SessionLister(redis.client, redis.breaker),
        parts.tracking,
        parts.metrics.recent_detect,
        process_id=parts.process.process_id,
    )
    webhooks = WebhookAdmin(parts.registry.webhooks, identity.audit)
    secure_cookies = settings.environment not in ("local", "test")
    return Operators(auth, sessions, center, webhooks, secure_cookies=secure_cookies)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
