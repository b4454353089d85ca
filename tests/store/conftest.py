"""The store on both databases: SQLite in a temp folder and a real PostgreSQL
(tests/peers/postgres.py, started once per session, a fresh database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..peers.postgres import PostgresPeer, pg_bindir

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresPeer]:
    if pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run `make peers`")
    peer = PostgresPeer().start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture()
def pg_url(postgres: PostgresPeer) -> str:
    return postgres.create_database(f"aidx_test_{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aidx.db'}"
    return str(request.getfixturevalue("pg_url"))
