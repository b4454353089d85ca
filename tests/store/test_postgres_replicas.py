"""Several replicas on one real PostgreSQL: outbox workers in separate processes never
deliver the same entry twice, and what one app instance writes another one reads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from aidx.inference.settings import Role
from aidx.inference.store import create_store, init_store
from aidx.integrations.outbox.store import OutboxStore, OutgoingObject, State, outbox
from aidx.pipelines.labs.store import LabStore, NewAlert
from aidx.pipelines.wsi.job_store import JobState, JobStore
from aidx.service.app import create_app

from ..conftest import auth, make_settings

pytestmark = pytest.mark.integration

ENTRIES = 120
LOCK_TIMEOUT = "?options=-c%20lock_timeout%3D3000"

# One replica's outbox worker, in its own process with its own engine and pool: the
# real OutboxWorker, whose destination appends each delivered object key to a file.
WORKER = """
import asyncio, sys, time
from aidx.inference.store import create_store
from aidx.integrations.outbox.store import OutboxStore
from aidx.integrations.outbox.worker import OutboxWorker

url, log, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])

class Recorder:
    def deliver(self, entry):
        with open(log, "a") as f:
            f.write(entry.object_key + "\\n")
        time.sleep(0.002)  # a delivery takes a moment: the workers interleave

async def main():
    worker = OutboxWorker(OutboxStore(create_store(url)), {"pacs": Recorder()}, batch=4)
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    idle = 0
    while idle < 3:
        idle = 0 if await worker.run_once() else idle + 1

asyncio.run(main())
"""


def test_two_outbox_workers_on_one_postgresql_deliver_each_entry_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    engine = create_store(pg_url)
    init_store(engine)
    store = OutboxStore(engine)
    for n in range(ENTRIES):
        key = f"1.2.826.0.1.{n}"
        store.enqueue(OutgoingObject("pacs", key, "dicom", "application/dicom", b"x"))
    logs = [tmp_path / f"worker{i}.log" for i in (1, 2)]
    start_at = f"{time.time() + 1.5:.3f}"  # both import first, then claim together
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, pg_url, str(log), start_at]) for log in logs
    ]
    try:
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    delivered = [Counter(log.read_text().split()) for log in logs]
    both = delivered[0] + delivered[1]
    assert len(both) == ENTRIES
    assert max(both.values()) == 1, [k for k, n in both.items() if n > 1]
    assert all(delivered), "one worker delivered nothing: the test did not exercise sharing"
    entries = store.list(limit=ENTRIES + 1)
    assert {e.state for e in entries} == {State.delivered}
    assert {e.attempts for e in entries} == {1}
    engine.dispose()


def test_claims_on_postgresql_skip_rows_another_worker_holds(pg_url: str) -> None:
    """While one replica's claim transaction holds rows, another claims the rest at
    once instead of waiting for it."""
    # B gives up on a row lock after 3 s, so a claim that waits fails instead of hanging.
    engine_a, engine_b = create_store(pg_url), create_store(pg_url + LOCK_TIMEOUT)
    init_store(engine_a)
    a, b = OutboxStore(engine_a), OutboxStore(engine_b)
    for n in range(6):
        a.enqueue(OutgoingObject("pacs", f"9.{n}", "dicom", "application/dicom", b"x"))
    with engine_a.begin() as held:  # replica A mid-claim: three rows locked
        held.execute(
            select(outbox.c.id).order_by(outbox.c.object_key).limit(3).with_for_update()
        ).all()
        started = time.monotonic()
        claimed = b.claim_due(lease_s=60, limit=10)
        assert time.monotonic() - started < 2
    assert sorted(e.object_key for e in claimed) == ["9.3", "9.4", "9.5"]
    engine_a.dispose()
    engine_b.dispose()


def test_what_one_app_instance_writes_another_reads(pg_url: str, tmp_path: Path) -> None:
    settings = [
        make_settings(tmp_path / f"replica{i}", database_url=pg_url, enabled_models=[])
        for i in (1, 2)
    ]
    with TestClient(create_app(settings[0])) as one, TestClient(create_app(settings[1])) as two:
        db = one.app.state.services.db  # type: ignore[attr-defined]
        assert db.dialect.name == "postgresql"
        job = JobStore(db).create(
            slide_path=Path("/slides/S-1.svs"),
            uploaded=False,
            mpp=0.5,
            slide={"width": 1024, "height": 1024},
            params={"max_regions": 10},
            submitted_by="pathologist-1",
        )
        JobStore(db).update(job.id, state=JobState.running, tiles_total=100, tiles_done=40)
        (alert,) = LabStore(db).save(
            [],
            [
                NewAlert(
                    "P-1",
                    "S-9",
                    "critical_high",
                    "potassium",
                    "critical",
                    "potassium 7.1 mmol/L is above the critical limit",
                    {"value": 7.1},
                    None,
                )  # fmt: skip
            ],
        )
        seen = two.get(f"/v1/wsi/jobs/{job.id}", headers=auth(Role.pathologist))
        assert seen.status_code == 200, seen.text
        assert seen.json()["state"] == "running"
        assert seen.json()["progress"]["tiles_done"] == 40
        read = two.get(f"/v1/labs/alerts/{alert.id}", headers=auth(Role.lab))
        assert read.status_code == 200, read.text
        assert read.json()["patient_id"] == "P-1"
