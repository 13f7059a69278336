"""The application factory. `app.main:app` is what uvicorn serves, built from environment settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.errors import install_error_handlers
from app.logging import configure_logging
from app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.routers.detect import create_detect_router
from app.routers.health import create_health_router
from app.routers.media import create_media_router
from app.routers.metrics import create_metrics_router
from app.routers.sessions import create_sessions_router
from app.runtime import Runtime
from app.settings import Settings, get_settings

JSON_BODY_LIMIT = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start in the background: the server answers liveness (and "not ready") while the model warms.
        starting = asyncio.create_task(runtime.start(), name="runtime-start")
        yield
        await runtime.stop_after(starting)

    app = FastAPI(
        title="Hazard Detection API",
        version="0.1.0",
        lifespan=lifespan,
        description="Road hazard detection on camera frames, per client session.",
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(create_sessions_router(runtime.sessions, settings.session_history_limit))
    app.include_router(create_detect_router(runtime.detection, settings))
    app.include_router(create_health_router(runtime.health))
    app.include_router(create_metrics_router(runtime.metrics, runtime.sessions))
    app.include_router(create_media_router(settings.storage_dir))
    app.add_middleware(
        BodySizeLimitMiddleware,
        default_limit=JSON_BODY_LIMIT,
        image_prefix="/detect/",
        image_limit=settings.max_image_bytes + MULTIPART_OVERHEAD,
    )
    app.add_middleware(RequestContextMiddleware, metrics=runtime.metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` is built on first access, so importing this module (tests, tools) builds nothing.
    if name == "app":
        return create_app()
    raise AttributeError(name)
