"""The outbox tests' store (SQLite in the test's folder) and objects to put in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from aidx.inference.store import create_store, init_store
from aidx.integrations.outbox.store import OutgoingObject


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    engine = create_store(f"sqlite:///{tmp_path / 'aidx.db'}")
    init_store(engine)
    return engine


def obj(key: str = "1.2.3", destination: str = "pacs", payload: bytes = b"x") -> OutgoingObject:
    return OutgoingObject(destination, key, "test", "application/octet-stream", payload, None)
