"""Alembic environment: runs on the engine the gateway passes in (no ini file, no URL
read here), so the same migrations serve SQLite and PostgreSQL, from the CLI or from
first use of an empty SQLite file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from gateway.store.schema import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run migrations through gateway.store.upgrade(engine)")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=engine.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
