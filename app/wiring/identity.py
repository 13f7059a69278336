"""Who is calling, in an API process: API keys, operator accounts and the audit log, on the one Redis client."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from app.services.identity.accounts import OperatorAccounts
from app.services.identity.audit import AuditLog
from app.services.identity.keys import KeyStore
from app.services.identity.pepper import load_pepper
from app.settings import Settings
from app.wiring.redis import RedisParts

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Identity:
    keys: KeyStore
    accounts: OperatorAccounts
    audit: AuditLog
    mode: str  # AUTH_MODE in effect: "off" or "keys"


def build_identity(settings: Settings, redis: RedisParts) -> Identity:
    auth, namespace = settings.auth, settings.fleet.name
    configured = auth.api_key_pepper.get_secret_value() if auth.api_key_pepper is not None else None
    keys = KeyStore(
        redis.client,
        namespace=namespace,
        pepper=load_pepper(configured, auth.api_key_pepper_file),
        cache_seconds=auth.api_key_cache_seconds,
    )
    accounts = OperatorAccounts(redis.client, namespace=namespace)
    if settings.auth_mode == "off":
        log.warning("auth_mode_off", effect="callers without a key are the tenant 'local'; set AUTH_MODE=keys")
    return Identity(keys, accounts, AuditLog(redis.client, namespace=namespace), settings.auth_mode)
