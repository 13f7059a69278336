"""Who is calling, in an API process: API keys, operator accounts and the audit log, on the one Redis client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog

from app.services.identity.accounts import OperatorAccounts
from app.services.identity.attempts import FailedKeyAttempts
from app.services.identity.audit import AuditLog
from app.services.identity.frame_rates import KeyFrameRates
from app.services.identity.keys import KeyStore
from app.services.identity.pepper import load_pepper
from app.services.uploads.signing import MediaSigner
from app.settings import Settings
from app.wiring.redis import RedisParts

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Identity:
    keys: KeyStore
    accounts: OperatorAccounts
    audit: AuditLog
    mode: Literal["off", "keys"]  # AUTH_MODE in effect
    attempts: FailedKeyAttempts  # failed key attempts per client address
    frame_rates: KeyFrameRates  # keys' frames_per_second, in this process
    media_urls: MediaSigner  # signs the /media URLs handed out, checks those presented


def api_key_pepper(settings: Settings) -> bytes:
    auth = settings.auth
    configured = auth.api_key_pepper.get_secret_value() if auth.api_key_pepper is not None else None
    return load_pepper(configured, auth.api_key_pepper_file)


def build_media_signer(settings: Settings) -> MediaSigner:
    """The process's one signer of /media URLs: API answers, the control center and webhook bodies hand them out
    through it, the media route checks them. With AUTH_MODE=off it signs and requires nothing (no pepper read)."""
    required = settings.auth_mode == "keys"
    pepper = api_key_pepper(settings) if required else b""
    return MediaSigner(pepper, settings.auth.media_url_seconds, required=required)


def build_identity(settings: Settings, redis: RedisParts, media_urls: MediaSigner) -> Identity:
    """`media_urls`: the process's signer (`build_media_signer`, built with its parts: the webhook sender signs too)."""
    auth, namespace = settings.auth, settings.fleet.name
    pepper = api_key_pepper(settings)
    keys = KeyStore(redis.client, namespace=namespace, pepper=pepper, cache_seconds=auth.api_key_cache_seconds)
    accounts = OperatorAccounts(redis.client, namespace=namespace)
    if settings.auth_mode == "off":
        log.warning("auth_mode_off", effect="callers without a key are the tenant 'local'; set AUTH_MODE=keys")
    attempts = FailedKeyAttempts(redis.client, namespace=namespace, per_minute=auth.key_failures_per_minute)
    audit = AuditLog(redis.client, namespace=namespace)
    return Identity(keys, accounts, audit, settings.auth_mode, attempts, KeyFrameRates(), media_urls)
