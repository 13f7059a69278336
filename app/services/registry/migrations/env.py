"""Alembic's environment: run only through `app.services.registry.migrate`, which hands over a connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from app.services.registry.spatial import include_object
from app.services.registry.tables import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, include_object=include_object)
with context.begin_transaction():
    context.run_migrations()
