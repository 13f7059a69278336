"""The application factory. `app.main:app` is what uvicorn serves, built from environment settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import __version__
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
from app.http.routers.media import create_media_router
from app.http.routers.metrics import create_metrics_router
from app.http.routers.sessions import create_sessions_router
from app.services.observability.logging import configure_logging
from app.settings import Settings, SettingsError, get_settings
from app.wiring.control import create_control_runtime
from app.wiring.runtime import Runtime

JSON_BODY_LIMIT = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.telemetry.log_level, settings.telemetry.log_json)
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start in the background: the server answers liveness (and "not ready") while the model warms.
        starting = asyncio.create_task(runtime.start(), name="runtime-start")
        yield
        await runtime.stop_after(starting)

    app = DocumentedAPI(
        title="Hazard Detection API",
        version=__version__,
        lifespan=lifespan,
        description="Road hazard detection on camera frames, per client session.",
        generate_unique_id_function=operation_id,
        docs_url=None,  # served by the docs router, from the package's own Swagger UI assets
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(
        create_sessions_router(
            runtime.sessions,
            settings.sessions.history_limit,
            settings.sessions.max_ttl_seconds,
            ClientAddress(settings.http.client_address_header, parse_networks(settings.http.trusted_proxies)),
        )
    )
    app.include_router(create_detect_router(runtime.detection, settings))
    app.include_router(create_hazards_router(runtime.tracking))
    app.include_router(
        create_jobs_router(
            runtime.jobs.service,
            runtime.tracking.params,
            settings.jobs.max_frames_per_request,
            settings.images.max_bytes,
        )
    )
    app.include_router(create_health_router(runtime.health))
    app.include_router(create_metrics_router(runtime.metrics, runtime.sessions, runtime.jobs.service))
    app.include_router(create_media_router(settings.uploads.storage_dir))
    app.include_router(
        create_admin_router(
            runtime.auth,
            runtime.model_control,
            ClientAddress(settings.http.client_address_header, parse_networks(settings.http.trusted_proxies)),
        )
    )
    control = create_control_runtime(settings, runtime)
    app.include_router(
        create_control_center_router(
            control.center,
            control.sessions,
            runtime.auth,
            ClientAddress(settings.http.client_address_header, parse_networks(settings.http.trusted_proxies)),
            secure_cookies=control.secure_cookies,
        )
    )
    app.include_router(create_docs_router(app.title, app.version, app.openapi_url or "/openapi.json"))
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
    app.add_middleware(RequestContextMiddleware, metrics=runtime.metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` is built on first access, so importing this module (tests, tools) builds nothing.
    if name == "app":
        try:
            settings = get_settings()
        except SettingsError as exc:
            # Whoever serves `app.main:app` (uvicorn, gunicorn) stops with the one-line reasons, no traceback.
            raise SystemExit(str(exc)) from None
        return create_app(settings)
    raise AttributeError(name)
