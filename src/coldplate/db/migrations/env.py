"""Alembic environment: runs on the connection `db.engine.migrate` hands over."""

from __future__ import annotations

from alembic import context

from coldplate.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through coldplate.db.engine.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
