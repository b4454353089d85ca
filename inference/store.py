"""The service's store: SQLAlchemy Core over SQLite (embedded default, under var/)
or PostgreSQL (AIDX_DATABASE_URL), behind one interface.

Every table is declared once in aidx.inference.schema (whatever else was imported,
`metadata` holds them all); Alembic revisions (aidx.inference.migrations) create and
change them, and `init_store` applies them at start-up on either database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text

from aidx.inference.files import FILE_MODE, private_file
from aidx.inference.schema import metadata

# The tables of the first revision: a store made by `create_all` before migrations
# existed holds them without an alembic_version table and is adopted at that revision.
BASELINE_REVISION = "0001"
BASELINE_TABLES = ("outbox", "lab_history", "lab_alerts", "wsi_jobs")
_MIGRATION_LOCK = 0x616964780001  # pg_advisory_xact_lock key: "aidx" + 1


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _private_sqlite_files(database: str | None) -> None:
    """The database file made 0600 before SQLite opens it: SQLite gives its -wal and
    -shm files the database's mode, so they hold the outbox's patient data unreadable
    to others too (those an older run left are closed here as well)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = private_file(Path(database))
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.chmod(FILE_MODE)


def create_store(url: str) -> Engine:
    if url.startswith(("postgresql://", "postgres://")):  # psycopg 3 is the driver
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_sqlite_files(parsed.database)
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(connection: Connection) -> Config:
    from aidx.inference.migrations import SCRIPT_LOCATION

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def init_store(engine: Engine) -> None:
    """`alembic upgrade head`, in one transaction; replicas starting together on
    PostgreSQL take turns (an advisory lock), the later ones find nothing to do."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = alembic_config(connection)
        present = set(inspect(connection).get_table_names())
        if "alembic_version" not in present and present & set(BASELINE_TABLES):
            _adopt_unversioned(connection, present)
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")


def _adopt_unversioned(connection: Connection, present: set[str]) -> None:
    missing = [metadata.tables[n] for n in BASELINE_TABLES if n not in present]
    if missing:  # an older embedded store: add what it lacks, then it is the baseline
        metadata.create_all(connection, tables=missing)
