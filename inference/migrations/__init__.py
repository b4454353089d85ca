"""Alembic migrations of the service's store (SQLite and PostgreSQL).

`aidx.inference.store.init_store` runs them programmatically at every start-up
(`alembic upgrade head`), under a lock on PostgreSQL so that replicas starting
together migrate once. Each revision lives in versions/ (package data, so the wheel
carries it) and spells its DDL out: a revision never imports the live tables.
"""

from pathlib import Path

SCRIPT_LOCATION = Path(__file__).resolve().parent
