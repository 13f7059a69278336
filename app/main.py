"""The application factory. `app.main:app` is what uvicorn serves, built from environment settings."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from app import __version__
from app.http.auth import KeyCheck, key_or_operator, metrics_access
from app.http.client_address import ClientAddress, parse_networks
from app.http.control_center import create_control_center_router
from app.http.errors import install_error_handlers
from app.http.middleware import BodyDeadlineMiddleware, BodySizeLimitMiddleware, RequestContextMiddleware
from app.http.openapi import DocumentedAPI, operation_id
from app.http.routers.admin import create_admin_router
from app.http.routers.detect import create_detect_router
from app.http.routers.docs import create_docs_router
from app.http.routers.hazards import create_hazards_router
from app.http.routers.health import create_health_router
from app.http.routers.jobs import create_jobs_router
from app.http.routers.keys import create_keys_router
from app.http.routers.media import create_media_router
from app.http.routers.metrics import create_metrics_router
from app.http.routers.operators import create_operators_router
from app.http.routers.registry import create_registry_router
from app.http.routers.sessions import create_sessions_router
from app.http.routers.stream import create_stream_router
from app.http.routers.webhooks import create_webhooks_router
from app.http.tracing import trace_requests
from app.services.observability.logging import configure_logging
from app.settings import Settings, SettingsError, get_settings
from app.wiring.identity import Identity, build_identity
from app.wiring.lifecycle import Lifecycle
from app.wiring.operators import Operators, build_operators
from app.wiring.parts import Parts, build_parts

JSON_BODY_LIMIT = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_json)
    parts = build_parts(settings, role="api")
    identity = build_identity(settings, parts.redis, parts.media_urls)
    operators = build_operators(settings, parts, identity)
    lifecycle = Lifecycle(parts)
    app = DocumentedAPI(
        title="Hazard Detection API",
        version=__version__,
        lifespan=_lifespan(lifecycle),
        description="Road hazard detection on camera frames, per client session.",
        generate_unique_id_function=operation_id,
        key_optional=identity.mode == "off",
        docs_url=None,  # served by the docs router, from the package's own Swagger UI assets
        redoc_url=None,
    )
    # For tests; routers get their parts as arguments.
    app.state.parts, app.state.lifecycle, app.state.identity = parts, lifecycle, identity
    install_error_handlers(app)
    # One resolver, TRUSTED_PROXIES parsed once: every per-client limit counts the same client.
    client_address = ClientAddress(settings.http.client_address_header, parse_networks(settings.http.trusted_proxies))
    # The one key check; the routes' dependency aliases (app/http/auth.py) reach it here.
    app.state.key_check = KeyCheck(
        identity.keys,
        identity.attempts,
        client_address,
        mode=identity.mode,
        require_tls=settings.environment == "production",
    )
    _include_routers(app, settings, parts, operators, identity, client_address)
    app.add_middleware(
        BodySizeLimitMiddleware,
        default_limit=JSON_BODY_LIMIT,
        image_prefix="/detect/",
        image_limit=settings.images.max_bytes,
        multipart_overhead=MULTIPART_OVERHEAD,
        batch_prefix="/jobs",
        batch_limit=settings.jobs.request_max_bytes,
    )
    app.add_middleware(BodyDeadlineMiddleware, seconds=settings.http.body_timeout_seconds)
    app.add_middleware(RequestContextMiddleware, metrics=parts.metrics)
    trace_requests(app)
    return app


def _lifespan(lifecycle: Lifecycle) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start in the background: the server answers liveness (and "not ready") while the model warms.
        starting = asyncio.create_task(lifecycle.start(), name="lifecycle-start")
        yield
        await lifecycle.stop_after(starting)

    return lifespan


def _include_routers(
    app: FastAPI,
    settings: Settings,
    parts: Parts,
    operators: Operators,
    identity: Identity,
    client_address: ClientAddress,
) -> None:
    jobs = parts.jobs.service
    app.include_router(
        create_sessions_router(
            parts.sessions,
            settings.sessions.history_limit,
            settings.sessions.max_ttl_seconds,
            client_address,
            identity.media_urls,
        )
    )
    app.include_router(create_detect_router(parts.detection, settings, identity.frame_rates))
    app.include_router(create_stream_router(parts.detection, parts.metrics, settings))
    app.include_router(create_hazards_router(parts.tracking, identity.media_urls))
    registry = parts.registry
    app.include_router(
        create_registry_router(registry.store, registry.exports, operators.auth, client_address, identity.media_urls)
    )
    app.include_router(
        create_jobs_router(jobs, parts.tracking.params, settings.jobs.max_frames_per_request, settings.images.max_bytes)
    )
    app.include_router(create_health_router(parts.health, key_or_operator(operators.auth)))
    metrics_token = settings.auth.metrics_token.get_secret_value() if settings.auth.metrics_token else None
    app.include_router(
        create_metrics_router(
            parts.metrics, parts.active_sessions, parts.kept_writes.pending, jobs, metrics_access(metrics_token)
        )
    )
    app.include_router(create_media_router(settings.uploads.storage_dir, identity.media_urls))
    app.include_router(create_admin_router(operators.auth, parts.fleet.model_control, client_address, identity.audit))
    app.include_router(create_keys_router(identity.keys, identity.audit, operators.auth, client_address))
    app.include_router(create_operators_router(identity.accounts, identity.audit, operators.auth, client_address))
    app.include_router(create_webhooks_router(operators.webhooks, operators.auth, client_address))
    app.include_router(
        create_control_center_router(
            operators.center,
            operators.sessions,
            operators.auth,
            client_address,
            (identity.keys, identity.accounts, identity.audit),
            secure_cookies=operators.secure_cookies,
            media_urls=identity.media_urls,
            registry=(registry.store, registry.exports),
            webhooks=operators.webhooks,
            map_tile_url=settings.registry.map_tile_url,
        )
    )
    app.include_router(
        create_docs_router(app.title, app.version, app.openapi_url or "/openapi.json", auth_off=identity.mode == "off")
    )


@functools.cache
def _served_app() -> FastAPI:
    """The one app a server process serves: uvicorn.run looks `app.main:app` up twice (once to check it, once to
    serve it), and two builds would be two services, each with its own generated admin password."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        # Whoever serves `app.main:app` (uvicorn, gunicorn) stops with the one-line reasons, no traceback.
        raise SystemExit(str(exc)) from None
    return create_app(settings)


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` is built on first access, so importing this module (tests, tools) builds nothing.
    if name == "app":
        return _served_app()
    raise AttributeError(name)
