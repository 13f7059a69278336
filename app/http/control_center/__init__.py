"""The operators' control center: /admin pages, htmx fragments, login, and their templates and assets."""

from app.http.control_center.router import create_control_center_router

__all__ = ["create_control_center_router"]
