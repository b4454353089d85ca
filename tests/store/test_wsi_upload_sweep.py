"""The sweep of uploads a dead replica left behind, on SQLite and on a real PostgreSQL:
what no job names and what only ended jobs name is deleted once stale (audited and
counted), a queued or running job's slide never is, and a replica that starts fails
a dead replica's job first, then sweeps its slide."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from aidx.inference.audit import AuditLog
from aidx.inference.metrics import ServiceMetrics
from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.store import create_store, init_store
from aidx.pipelines.wsi.intake import SERIES_MARKER
from aidx.pipelines.wsi.job_runner import JobRunner
from aidx.pipelines.wsi.job_store import Job, JobState, JobStore
from aidx.pipelines.wsi.upload_sweep import SweepReason, UploadSweeper

from ..conftest import make_settings
from ..waiting import wait_until_async

pytestmark = pytest.mark.integration
STALE_S = 3600.0
HOURS_AGO = time.time() - 2 * STALE_S


@pytest.fixture()
def engine(store_url: str) -> Iterator[Engine]:
    engine = create_store(store_url)
    init_store(engine)
    yield engine
    engine.dispose()


def upload(var_dir: Path, name: str, *, written_at: float = HOURS_AGO) -> Path:
    path = var_dir / "wsi" / "uploads" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"slide bytes")
    os.utime(path, (written_at, written_at))
    return path


def series(var_dir: Path, name: str) -> Path:
    """A DICOM WSI series folder with its marker and one instance, written hours ago."""
    folder = var_dir / "wsi" / "dicom" / name
    folder.mkdir(parents=True)
    for item in (folder / SERIES_MARKER, folder / "level0.dcm"):
        item.write_bytes(b"")
        os.utime(item, (HOURS_AGO, HOURS_AGO))
    os.utime(folder, (HOURS_AGO, HOURS_AGO))
    return folder / "level0.dcm"


def job_of(store: JobStore, slide: Path, state: JobState, **values: object) -> Job:
    job = store.create(
        slide_path=slide, uploaded=True, mpp=0.5, slide={}, params={}, submitted_by="p-1"
    )
    store.update(job.id, state=state, **values)
    return store.get(job.id)


def sweeper(store: JobStore, var_dir: Path, **extra: object) -> UploadSweeper:
    return UploadSweeper(store, var_dir, stale_s=STALE_S, every_s=60, **extra)  # type: ignore[arg-type]


def test_stale_uploads_without_a_live_job_are_swept_audited_and_counted(
    engine: Engine, tmp_path: Path
) -> None:
    var_dir, store = tmp_path / "var", JobStore(engine, owner="replica-a")
    partial = upload(var_dir, ".0b1c.tiff.part")  # its replica died mid-upload
    ended = upload(var_dir, "5e7a.svs")
    job_of(store, ended, JobState.failed, error_code="interrupted")
    running = upload(var_dir, "9f2d.svs")
    job_of(store, running, JobState.running)
    queued = upload(var_dir, "3c4e.svs")
    job_of(store, queued, JobState.queued)
    fresh = upload(var_dir, ".77aa.tiff.part", written_at=time.time())  # still being written
    dicom = series(var_dir, "1d2e")
    job_of(store, dicom, JobState.succeeded)
    audit, metrics = AuditLog(tmp_path / "audit.log"), ServiceMetrics()

    swept = sweeper(store, var_dir, audit=audit, metrics=metrics).sweep()

    assert {(s.path, s.reason) for s in swept} == {
        (partial, SweepReason.abandoned),
        (ended, SweepReason.job_ended),
        (dicom.parent, SweepReason.job_ended),
    }
    assert not partial.exists() and not ended.exists() and not dicom.parent.exists()
    assert running.exists() and queued.exists() and fresh.exists()
    entries = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert sorted((e["action"], e["resource"], e["outcome"]) for e in entries) == [
        ("wsi.upload.sweep", "wsi-dicom/1d2e", "job_ended"),
        ("wsi.upload.sweep", "wsi-uploads/.0b1c.tiff.part", "abandoned"),
        ("wsi.upload.sweep", "wsi-uploads/5e7a.svs", "job_ended"),
    ]
    counted = metrics.registry.get_sample_value
    assert counted("aidx_wsi_uploads_swept_total", {"reason": "abandoned"}) == 1
    assert counted("aidx_wsi_uploads_swept_total", {"reason": "job_ended"}) == 2
    assert sweeper(store, var_dir).sweep() == []  # nothing left to sweep


def test_kept_uploads_of_ended_jobs_stay_and_abandoned_ones_go(
    engine: Engine, tmp_path: Path
) -> None:
    var_dir, store = tmp_path / "var", JobStore(engine, owner="replica-a")
    kept = upload(var_dir, "5e7a.svs")
    job_of(store, kept, JobState.succeeded)
    partial = upload(var_dir, ".0b1c.tiff.part")
    swept = sweeper(store, var_dir, keep_ended=True).sweep()
    assert [(s.path, s.reason) for s in swept] == [(partial, SweepReason.abandoned)]
    assert kept.exists()


def test_a_starting_replica_fails_a_dead_replicas_job_then_sweeps_its_upload(
    engine: Engine, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    dead = JobStore(engine, owner="replica-dead")
    slide = upload(var_dir, "5e7a.svs")
    beat = datetime.now(UTC) - timedelta(minutes=5)
    job = job_of(dead, slide, JobState.running, heartbeat_at=beat)
    live_store = JobStore(engine, owner="replica-b")
    live_slide = upload(var_dir, "9f2d.svs")
    job_of(live_store, live_slide, JobState.running)  # replica B's own: beating

    async def start_b() -> None:
        service = ModelService(make_settings(tmp_path, enabled_models=[]))
        runner = JobRunner(
            live_store, service, ReportStore(tmp_path / "reports"), heartbeat_s=10, stale_s=30,
            sweeper=sweeper(live_store, var_dir),
        )  # fmt: skip
        runner.start()
        try:
            await wait_until_async(lambda: not slide.exists(), what="the sweep")
        finally:
            await runner.stop()

    asyncio.run(start_b())
    failed = live_store.get(job.id)
    assert (failed.state, failed.error_code) == (JobState.failed, "interrupted")
    assert live_slide.exists()
