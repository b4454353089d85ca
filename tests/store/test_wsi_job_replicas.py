"""Whole-slide jobs with several replicas on one store, on SQLite and on a real
PostgreSQL: a replica that starts fails only the jobs whose replica is gone (stale
heartbeat), live replicas keep their jobs alive, and a job started through one
replica is followed, to its results, through another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.settings import Role
from aidx.inference.store import create_store, init_store
from aidx.pipelines.wsi.job_runner import JobRunner
from aidx.pipelines.wsi.job_store import Job, JobState, JobStore
from aidx.pipelines.wsi.phantom import make_layout, write_slide
from aidx.service.app import create_app

from ..conftest import auth, make_settings

pytestmark = pytest.mark.integration
PATHOLOGIST = auth(Role.pathologist)


@pytest.fixture()
def engines(store_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two replicas' connections to one freshly migrated store."""
    first, second = create_store(store_url), create_store(store_url)
    init_store(first)
    yield first, second
    first.dispose()
    second.dispose()


def new_job(store: JobStore, state: JobState = JobState.running, **values: object) -> Job:
    job = store.create(
        slide_path=Path("/slides/S-1.svs"),
        uploaded=False,
        mpp=0.5,
        slide={},
        params={},
        submitted_by="pathologist-1",
    )
    store.update(job.id, state=state, **values)
    return store.get(job.id)


def runner(store: JobStore, tmp_path: Path, heartbeat_s: float, stale_s: float) -> JobRunner:
    service = ModelService(make_settings(tmp_path, enabled_models=[]))
    reports = ReportStore(tmp_path / store.owner.replace(":", "_"))
    return JobRunner(store, service, reports, heartbeat_s=heartbeat_s, stale_s=stale_s)


def test_a_starting_replica_fails_only_jobs_whose_replica_is_gone(
    engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    a, b = JobStore(engines[0], owner="replica-a"), JobStore(engines[1], owner="replica-b")
    live = new_job(a)
    waiting = new_job(a, JobState.queued)
    gone = JobStore(engines[0], owner="replica-gone")
    dead = new_job(gone, heartbeat_at=datetime.now(UTC) - timedelta(minutes=5))
    legacy = new_job(gone, JobState.queued, heartbeat_at=None)  # a row from before 0002

    async def start_b() -> int:
        replica_b = runner(b, tmp_path, heartbeat_s=10, stale_s=30)
        try:
            return replica_b.start()
        finally:
            await replica_b.stop()

    assert asyncio.run(start_b()) == 2
    for job in (live, waiting):  # replica A's jobs: left alone
        seen = b.get(job.id)
        assert (seen.state, seen.owner, seen.error_code) == (job.state, "replica-a", None)
    for job in (dead, legacy):
        seen = b.get(job.id)
        assert (seen.state, seen.error_code) == (JobState.failed, "interrupted")


def test_heartbeats_keep_a_live_replicas_job_and_a_dead_ones_fails(
    engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    heartbeat_s, stale_s = 0.1, 1.5
    a, b = JobStore(engines[0], owner="replica-a"), JobStore(engines[1], owner="replica-b")

    async def scenario() -> tuple[Job, Job, Job, float]:
        replica_a = runner(a, tmp_path, heartbeat_s, stale_s)
        replica_b = runner(b, tmp_path, heartbeat_s, stale_s)
        replica_a.start()
        job = await asyncio.to_thread(new_job, a)
        replica_b.start()  # B sweeps for stale jobs every heartbeat from now on
        await asyncio.sleep(2 * stale_s)
        alive = await asyncio.to_thread(b.get, job.id)
        await replica_a.stop()  # A's heartbeats end, as when its process is killed
        stopped = time.monotonic()
        just_after = await asyncio.to_thread(b.get, job.id)
        while (await asyncio.to_thread(b.get, job.id)).state is JobState.running:
            assert time.monotonic() - stopped < stale_s + 10, "the dead job was not failed"
            await asyncio.sleep(0.05)
        noticed_s = time.monotonic() - stopped
        await replica_b.stop()
        return alive, just_after, b.get(job.id), noticed_s

    alive, just_after, failed, noticed_s = asyncio.run(scenario())
    assert alive.state is JobState.running and alive.heartbeat_at is not None
    assert alive.heartbeat_at > alive.created_at + timedelta(seconds=stale_s)  # A kept beating
    assert just_after.state is JobState.running  # not failed before it went stale
    assert (failed.state, failed.error_code) == (JobState.failed, "interrupted")
    assert noticed_s >= stale_s - 2 * heartbeat_s - 0.2  # its last beat, then the limit


def test_a_job_run_through_one_replica_is_followed_through_another(
    store_url: str, tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    write_slide(slides / "S-7.svs", make_layout(7, 2048, 2048, n_suspicious=1, n_lymphoid=0))
    # The replicas share the database and the reports folder (a shared volume), not
    # their processes: each has its own models, batcher and job runner.
    settings = make_settings(
        tmp_path / "var",
        database_url=store_url,
        enabled_models=["wsi_tiles"],
        wsi_slide_roots=[slides],
        writeback=False,
    )
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        submitted = one.post("/v1/wsi/jobs", headers=PATHOLOGIST, json={"slide_path": "S-7.svs"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 120
        seen = two.get(f"/v1/wsi/jobs/{job_id}", headers=PATHOLOGIST).json()
        while seen["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = two.get(f"/v1/wsi/jobs/{job_id}", headers=PATHOLOGIST).json()
        assert seen["state"] == "succeeded", seen["error"]
        progress = seen["progress"]
        assert progress["tiles_done"] == progress["tiles_total"] > 0
        assert seen["report"]["pipeline"] == "wsi"
        geo = two.get(seen["links"]["geojson"], headers=PATHOLOGIST)
        assert geo.status_code == 200 and geo.json()["type"] == "FeatureCollection"
        owner = one.app.state.services.wsi_jobs.store.owner  # type: ignore[attr-defined]
        assert owner != two.app.state.services.wsi_jobs.store.owner  # type: ignore[attr-defined]
        assert two.app.state.services.wsi_jobs.store.get(job_id).owner == owner  # type: ignore[attr-defined]
