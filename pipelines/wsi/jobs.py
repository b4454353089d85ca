"""Whole-slide jobs: recorded in the service's store, run in the background.

A job survives its client's disconnect (it runs as its own task, not the request's).
Progress is written to the store at most every `PROGRESS_EVERY_S`. Any replica reads
any job: the rows live in the shared store.

Several replicas share one store, so a job records its owner (the replica that
accepted it, `replica_id`) and a heartbeat that the owner refreshes for all its active
jobs every `heartbeat_s`. A job whose heartbeat is older than `stale_s` lost its
replica (a crash, a kill, a lost database connection): every replica's heartbeat loop,
and each replica at start-up, marks such jobs failed (`interrupted`), so no job is left
"running" forever; the client resubmits. A replica that starts leaves the live jobs
of the others alone. A replica that stops cleanly marks its own jobs at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    or_,
    select,
    update,
)

from aidx.inference.errors import AidxError, NotFound
from aidx.inference.reports import ReportStore
from aidx.inference.schema import wsi_jobs
from aidx.inference.serving import ModelService
from aidx.pipelines.wsi.analysis import AnalysisParams, analyze, build_report, tile_model
from aidx.pipelines.wsi.slide import describe

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (JobState.queued, JobState.running)

INTERRUPTED = "the service stopped before the job finished; submit it again"


def _now() -> datetime:
    return datetime.now(UTC)


def replica_id() -> str:
    """This process among the replicas: host, pid, and a random part (pids repeat
    across restarts and containers)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    slide_path: Path
    uploaded: bool
    mpp: float | None
    slide: dict[str, Any] | None
    params: dict[str, Any]
    submitted_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tiles_total: int | None
    tiles_done: int
    rate_tiles_s: float | None
    error_code: str | None
    error_message: str | None
    report_id: str | None
    owner: str | None = None
    heartbeat_at: datetime | None = None

    @property
    def eta_s(self) -> float | None:
        if self.state is not JobState.running or not self.rate_tiles_s or not self.tiles_total:
            return None
        return max(0.0, (self.tiles_total - self.tiles_done) / self.rate_tiles_s)


class JobStore:
    """Jobs in the shared store; the jobs this store creates belong to `owner`."""

    def __init__(self, engine: Engine, owner: str | None = None) -> None:
        self.engine = engine
        self.owner = owner or replica_id()

    def create(
        self,
        *,
        slide_path: Path,
        uploaded: bool,
        mpp: float | None,
        slide: dict[str, Any],
        params: dict[str, Any],
        submitted_by: str,
        job_id: str | None = None,
    ) -> Job:
        row = {
            "id": job_id or str(uuid.uuid4()),
            "state": JobState.queued.value,
            "slide_path": str(slide_path),
            "uploaded": uploaded,
            "mpp": mpp,
            "slide": slide,
            "params": params,
            "submitted_by": submitted_by,
            "created_at": _now(),
            "tiles_done": 0,
            "owner": self.owner,
            "heartbeat_at": _now(),
        }
        with self.engine.begin() as conn:
            conn.execute(wsi_jobs.insert().values(**row))
        return self.get(str(row["id"]))

    def get(self, job_id: str) -> Job:
        try:
            key = str(uuid.UUID(job_id))
        except ValueError:
            raise NotFound(f"no job {job_id!r}", code="job_not_found") from None
        with self.engine.connect() as conn:
            row = conn.execute(select(wsi_jobs).where(wsi_jobs.c.id == key)).mappings().first()
        if row is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        return _job(row)

    def recent(self, limit: int = 50) -> list[Job]:
        query = select(wsi_jobs).order_by(wsi_jobs.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def update(self, job_id: str, *, only_if: tuple[JobState, ...] = (), **values: Any) -> bool:
        """Set columns; with `only_if`, only while the job is in one of those states
        (so a late progress write never revives a cancelled job). True if it applied."""
        values = {k: (v.value if isinstance(v, JobState) else v) for k, v in values.items()}
        statement = update(wsi_jobs).where(wsi_jobs.c.id == job_id).values(**values)
        if only_if:
            statement = statement.where(wsi_jobs.c.state.in_([s.value for s in only_if]))
        with self.engine.begin() as conn:
            return bool(conn.execute(statement).rowcount)

    def heartbeat(self) -> int:
        """Refresh the heartbeat of this owner's queued and running jobs."""
        statement = (
            update(wsi_jobs)
            .where(wsi_jobs.c.owner == self.owner, wsi_jobs.c.state.in_(_values(ACTIVE)))
            .values(heartbeat_at=_now())
        )
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)

    def fail_stale(self, stale_s: float, *, now: datetime | None = None) -> int:
        """Fail queued or running jobs whose heartbeat is older than `stale_s` (or was
        never written: rows from before heartbeats); their replica is gone."""
        cutoff = (now or _now()) - timedelta(seconds=stale_s)
        statement = (
            update(wsi_jobs)
            .where(
                wsi_jobs.c.state.in_(_values(ACTIVE)),
                or_(wsi_jobs.c.heartbeat_at.is_(None), wsi_jobs.c.heartbeat_at < cutoff),
            )
            .values(
                state=JobState.failed.value,
                finished_at=_now(),
                error_code="interrupted",
                error_message=INTERRUPTED,
            )
        )
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)


def _values(states: tuple[JobState, ...]) -> list[str]:
    return [s.value for s in states]


def _job(row: Any) -> Job:
    def aware(value: datetime | None) -> datetime | None:  # SQLite drops the zone
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    return Job(
        id=row["id"],
        state=JobState(row["state"]),
        slide_path=Path(row["slide_path"]),
        uploaded=bool(row["uploaded"]),
        mpp=row["mpp"],
        slide=row["slide"],
        params=dict(row["params"] or {}),
        submitted_by=row["submitted_by"],
        created_at=aware(row["created_at"]) or _now(),
        started_at=aware(row["started_at"]),
        finished_at=aware(row["finished_at"]),
        tiles_total=row["tiles_total"],
        tiles_done=int(row["tiles_done"] or 0),
        rate_tiles_s=row["rate_tiles_s"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        report_id=row["report_id"],
        owner=row["owner"],
        heartbeat_at=aware(row["heartbeat_at"]),
    )


class JobRunner:
    """Runs jobs as asyncio tasks, at most `max_running` at a time, and keeps their
    heartbeat. `heartbeat_s` and `stale_s` default to the service's settings
    (AIDX_WSI_JOB_HEARTBEAT_S, AIDX_WSI_JOB_STALE_S)."""

    def __init__(
        self,
        store: JobStore,
        models: ModelService,
        reports: ReportStore,
        *,
        max_running: int = 1,
        readers: int = 0,
        links: Callable[[str], dict[str, str]] | None = None,
        heartbeat_s: float | None = None,
        stale_s: float | None = None,
    ) -> None:
        wsi = models.settings.wsi
        self.heartbeat_s = heartbeat_s or wsi.job_heartbeat_s
        self.stale_s = stale_s or wsi.job_stale_s
        self.store = store
        self.models = models
        self.reports = reports
        self.readers = readers
        self.links = links
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self._beating: asyncio.Task[None] | None = None

    def start(self) -> int:
        """Fail the jobs that lost their replica, then keep this replica's alive
        (called from the running event loop, at start-up)."""
        interrupted = self.store.fail_stale(self.stale_s)
        if interrupted:
            log.warning("%d whole-slide job(s) lost their replica: interrupted", interrupted)
        self._beating = asyncio.get_running_loop().create_task(
            self._keep_alive(), name="wsi-job-heartbeat"
        )
        return interrupted

    async def _keep_alive(self) -> None:
        """Every heartbeat: refresh this replica's jobs first (so they are never stale
        here), then fail the jobs of replicas that stopped beating."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await asyncio.to_thread(self.store.heartbeat)
                lost = await asyncio.to_thread(self.store.fail_stale, self.stale_s)
            except Exception as exc:  # the database may be away for a moment: next beat
                log.warning("whole-slide job heartbeat failed: %s", type(exc).__name__)
                continue
            if lost:
                log.warning("%d whole-slide job(s) lost their replica: interrupted", lost)

    def submit(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job.id), name=f"wsi-job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(job.id, None))

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.state in ACTIVE:
            self._cancel_requested.add(job_id)
            self.store.update(
                job_id,
                only_if=ACTIVE,
                state=JobState.cancelled,
                finished_at=_now(),
                error_code="cancelled",
                error_message="cancelled on request",
            )
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()
        return self.store.get(job_id)

    async def stop(self) -> None:
        """Stop running jobs; they are recorded as interrupted, not lost."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, job_id: str) -> None:
        try:
            async with self._slots:
                await self._analyse(job_id)
        except asyncio.CancelledError:
            if job_id not in self._cancel_requested:
                await asyncio.to_thread(
                    self.store.update,
                    job_id,
                    only_if=ACTIVE,
                    state=JobState.failed,
                    finished_at=_now(),
                    error_code="interrupted",
                    error_message=INTERRUPTED,
                )
            raise
        except AidxError as exc:
            await self._fail(job_id, exc.code, exc.message)
        except Exception as exc:  # a bug: the job fails with a stable code, the log has it
            log.exception("whole-slide job %s failed", job_id)
            await self._fail(job_id, "internal_error", f"internal error ({type(exc).__name__})")
        finally:
            self._cancel_requested.discard(job_id)

    async def _fail(self, job_id: str, code: str, message: str) -> None:
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=ACTIVE,
            state=JobState.failed,
            finished_at=_now(),
            error_code=code,
            error_message=message,
        )

    async def _analyse(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state is not JobState.queued:
            return
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=ACTIVE,
            state=JobState.running,
            started_at=_now(),
            heartbeat_at=_now(),
        )
        info = await asyncio.to_thread(describe, job.slide_path, job.mpp)
        params = AnalysisParams(**job.params, readers=self.readers)
        model = tile_model(self.models)
        last = {"at": 0.0, "writing": False, "t0": time.perf_counter()}

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if done == 0:
                last["t0"] = now  # tiles start streaming: the rate counts from here
            elif done < total and now - last["at"] < PROGRESS_EVERY_S:
                return
            if last["writing"]:
                return
            last["at"] = now
            elapsed = now - last["t0"]
            rate = done / elapsed if done and elapsed > 0 else None
            last["writing"] = True

            def write() -> None:
                try:
                    self.store.update(
                        job_id,
                        only_if=(JobState.running,),
                        tiles_total=total,
                        tiles_done=done,
                        rate_tiles_s=rate,
                    )
                finally:
                    last["writing"] = False

            asyncio.get_running_loop().run_in_executor(None, write)

        result = await analyze(self.models, info, params, progress, model)
        links = self.links(job_id) if self.links else None
        report, files = await asyncio.to_thread(build_report, result, model, links=links)
        await asyncio.to_thread(self.reports.save, report, files)
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=(JobState.running,),
            state=JobState.succeeded,
            finished_at=_now(),
            tiles_total=result.tally.total,
            tiles_done=result.tally.done,
            rate_tiles_s=result.tally.done / result.stream_s if result.stream_s > 0 else None,
            report_id=report.id,
        )
