"""Alembic migrations build the store on SQLite and on a real PostgreSQL, match the
tables the code declares, run again as a no-op, and adopt a pre-migration store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from aidx.inference.migrations import SCRIPT_LOCATION
from aidx.inference.store import BASELINE_TABLES, create_store, init_store, metadata
from aidx.integrations.outbox.store import OutboxStore, OutgoingObject

pytestmark = pytest.mark.integration


def head() -> str:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def test_migrations_build_every_declared_table_and_rerun_as_a_no_op(store_url: str) -> None:
    engine = create_store(store_url)
    try:
        init_store(engine)
        init_store(engine)  # a second start-up (or a second replica): nothing to do
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head()
            assert set(inspect(conn).get_table_names()) == {*metadata.tables, "alembic_version"}
            # The migrations and the code's table declarations agree column by column.
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_a_store_made_before_migrations_is_adopted_without_losing_rows(tmp_path: Path) -> None:
    engine = create_store(f"sqlite:///{tmp_path / 'old.db'}")
    metadata.create_all(engine)  # how aidx made its store before Alembic
    OutboxStore(engine).enqueue(OutgoingObject("pacs", "1.2.3", "dicom", "application/dicom", b"x"))
    init_store(engine)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()
        outbox = metadata.tables["outbox"]
        assert conn.execute(select(outbox.c.object_key)).scalars().all() == ["1.2.3"]
    assert set(BASELINE_TABLES) <= set(metadata.tables)
    engine.dispose()


def test_the_postgresql_url_uses_psycopg_3(pg_url: str) -> None:
    engine = create_store(pg_url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    engine.dispose()


def test_jobs_of_the_first_revision_gain_an_owner_column_and_count_as_stale(
    store_url: str,
) -> None:
    """A store at 0001 with a running job: the upgrade keeps the row; with no heartbeat
    it belongs to no live replica, so a starting replica fails it."""
    from alembic import command

    from aidx.inference.store import alembic_config
    from aidx.pipelines.wsi.job_store import JobState, JobStore, wsi_jobs

    engine = create_store(store_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            wsi_jobs.insert().values(
                id="00000000-0000-4000-8000-000000000001", state="running", slide_path="/s",
                uploaded=False, params={}, submitted_by="p", tiles_done=3,
                created_at=datetime.now(UTC),
            )  # only the columns of 0001
        )  # fmt: skip
    init_store(engine)
    jobs = JobStore(engine)
    (job,) = jobs.recent()
    assert (job.state, job.tiles_done, job.owner, job.heartbeat_at) == ("running", 3, None, None)
    assert jobs.fail_stale(stale_s=30) == 1
    assert jobs.get(job.id).state is JobState.failed
    engine.dispose()


def test_outbox_payloads_of_revision_0009_move_to_their_own_table(store_url: str) -> None:
    """A store at 0009 with entries (their payloads in the outbox's rows): the upgrade
    keeps every entry with its payload, and the entries work as before."""
    from alembic import command
    from sqlalchemy import LargeBinary, bindparam, text

    from aidx.inference.store import alembic_config
    from aidx.integrations.outbox.store import entry_id

    engine = create_store(store_url)
    payloads = {"1.2.3": b"\x00SR" * 1000, "1.2.4": b"SC"}
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0009")
        insert_old = text(
            "INSERT INTO outbox (id, destination, object_key, kind, media_type, payload,"
            " state, attempts, next_attempt_at, lease_until, created_at, updated_at)"
            " VALUES (:id, 'pacs', :key, 'dicom', 'application/dicom', :payload,"
            " 'pending', 0, 0, 0, 0, 0)"
        ).bindparams(bindparam("payload", type_=LargeBinary))
        for key, payload in payloads.items():
            conn.execute(insert_old, {"id": entry_id("pacs", key), "key": key, "payload": payload})
    init_store(engine)
    store = OutboxStore(engine)
    claimed = store.claim_due(lease_s=60, limit=10)
    assert {e.object_key: e.payload for e in claimed} == payloads
    assert {s["object_key"]: s["size_bytes"] for s in store.summaries()} == {
        k: len(p) for k, p in payloads.items()
    }
    engine.dispose()
