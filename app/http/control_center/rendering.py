"""The control center's templates and assets, both shipped inside this package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.http.control_center.presenters import duration, state_label, when

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static/control"


def control_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["when"] = when
    templates.env.filters["duration"] = duration
    templates.env.globals["state_label"] = state_label
    return templates


# Read-only, like the files it loads: the route class (built by FastAPI, with no arguments of ours) renders errors too.
TEMPLATES = control_templates()


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status)
