"""The job store, the outbox, lab history and alerts behave the same on SQLite and
on a real PostgreSQL (each test runs on both, on a freshly migrated store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from aidx.inference.errors import NotFound
from aidx.inference.store import create_store, init_store
from aidx.integrations.outbox.store import OutboxConflict, OutboxStore, OutgoingObject, State
from aidx.pipelines.labs.store import Conflict, HistoryRow, LabStore, NewAlert
from aidx.pipelines.wsi.job_store import JobState, JobStore

pytestmark = pytest.mark.integration


@pytest.fixture()
def engine(store_url: str) -> Iterator[Engine]:
    engine = create_store(store_url)
    init_store(engine)
    yield engine
    engine.dispose()


def test_outbox_lifecycle(engine: Engine) -> None:
    store = OutboxStore(engine)
    obj = OutgoingObject("pacs", "1.2.3", "dicom", "application/dicom", b"\x00\xffSR")
    assert store.enqueue(obj) and not store.enqueue(obj)
    now = time.time()
    (entry,) = store.claim_due(lease_s=30, limit=5, now=now)
    assert entry.payload == b"\x00\xffSR"
    assert store.claim_due(lease_s=30, limit=5, now=now + 1) == []
    store.mark_failed_attempt(entry.id, "refused", retry_at=None)
    assert store.get(entry.id).state is State.failed
    assert store.counts()["pacs"]["failed"] == 1
    assert store.retry(entry.id).state is State.pending
    with pytest.raises(OutboxConflict):
        store.drop(entry.id)
    (again,) = store.claim_due(lease_s=30, limit=5)
    store.mark_delivered(again.id)
    assert [e.state for e in store.list()] == [State.delivered]
    # the API's listing, read without the payloads, says what the entries say
    assert store.summaries() == [e.summary() for e in store.list()]
    assert store.summaries()[0]["size_bytes"] == 4


def test_lab_history_and_alerts(engine: Engine) -> None:
    labs = LabStore(engine)
    first = HistoryRow("P-1", "potassium", "S-1", 4.0, 1000.0, True)
    labs.save([first], [])
    labs.save([HistoryRow("P-1", "potassium", "S-1", 4.2, 1000.0, True)], [])  # resent
    (previous,) = labs.previous([("P-1", "S-2", 2000.0)], ["potassium"], since_s=0)
    assert (previous.specimen_id, previous.value) == ("S-1", 4.2)
    alert = NewAlert("P-1", "S-2", "delta", "potassium", "warning", "delta", {"d": 2.0}, "M-1")
    (created,) = labs.save([], [alert])
    assert labs.save([], [alert]) == []  # the same alert once
    assert [a.id for a in labs.alerts()] == [created.id]
    assert created.created_at.tzinfo is not None
    acked = labs.acknowledge(created.id, by="tech-1", reason="called the ward")
    assert acked.state == "acknowledged" and acked.evidence == {"d": 2.0}
    with pytest.raises(Conflict):
        labs.acknowledge(created.id, by="tech-2", reason="again")
    with pytest.raises(NotFound):
        labs.alert("no-such-alert")


def test_wsi_jobs(engine: Engine) -> None:
    jobs = JobStore(engine)
    job = jobs.create(
        slide_path=Path("/slides/S-2.svs"),
        uploaded=True,
        mpp=None,
        slide={"levels": 3},
        params={"max_regions": 5},
        submitted_by="pathologist-1",
    )
    stored = jobs.get(job.id).created_at  # an aware UTC time on both databases
    assert stored.utcoffset() == timedelta(0) and stored == job.created_at
    assert jobs.update(job.id, only_if=(JobState.queued,), state=JobState.running)
    assert not jobs.update(job.id, only_if=(JobState.queued,), state=JobState.cancelled)
    assert jobs.fail_stale(stale_s=30) == 0  # its heartbeat is fresh
    assert jobs.fail_stale(stale_s=30, now=job.created_at + timedelta(minutes=1)) == 1
    got = jobs.get(job.id)
    assert (got.state, got.error_code, got.slide, got.uploaded) == (
        JobState.failed,
        "interrupted",
        {"levels": 3},
        True,
    )
    assert [j.id for j in jobs.recent()] == [job.id]
