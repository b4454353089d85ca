"""Alembic's environment: runs on the connection that init_store hands over.

Alembic executes this file itself; importing it anywhere else (the wheel test imports
every module) does nothing.
"""

from __future__ import annotations

from alembic import context

from aidx.inference.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the migrations through aidx.inference.store.init_store")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER: copy + move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if getattr(context, "_proxy", None) is not None:  # inside an Alembic command
    run_migrations()
