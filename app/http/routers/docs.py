"""The service's front door: `GET /` (where everything is) and `/docs`, Swagger UI served from the package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.http.openapi import error_responses
from app.http.schemas.index import HealthLinks, ServiceIndex, ServiceLinks

SWAGGER_UI_VERSION = "5.35.0"  # swagger-ui-dist, vendored unmodified: app/http/static/swagger/README.md
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/static"
SWAGGER_ASSETS = f"{STATIC_URL}/swagger"
DOCS_URL = "/docs"
METRICS_URL = "/metrics"


AUTH_OFF_BANNER = (
    '<div role="alert" style="padding:.6em 1em;background:#fff3cd;color:#664d03;font-family:sans-serif">'
    "<strong>AUTH_MODE=off:</strong> callers without an API key are served as the tenant <code>local</code>. "
    "Set AUTH_MODE=keys before this service is reachable by anyone else.</div>"
)


def create_docs_router(title: str, version: str, openapi_url: str, *, auth_off: bool = False) -> APIRouter:
    """`auth_off`: /docs says so in a banner above the operations."""
    router = APIRouter()
    index = ServiceIndex(
        service=title,
        version=version,
        links=ServiceLinks(
            docs=DOCS_URL,
            openapi=openapi_url,
            health=HealthLinks(live="/health/live", ready="/health/ready", deep="/health/deep"),
            metrics=METRICS_URL,
        ),
    )

    @router.get("/", tags=["service"], responses=error_responses())
    async def service_index() -> ServiceIndex:
        """What this service is and where its documentation, probes and metrics are."""
        return index

    @router.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", ""))  # behind a proxy that strips a prefix
        assets = f"{root}{SWAGGER_ASSETS}"
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{assets}/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None},  # no call to the public validator
        )
        if not auth_off:
            return page
        html = bytes(page.body).decode().replace("<body>", f"<body>\n{AUTH_OFF_BANNER}", 1)
        return HTMLResponse(html)

    router.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    return router
