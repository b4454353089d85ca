"""Whole-slide jobs: recorded in the service's store, run in the background.

A job survives its client's disconnect (it runs as its own task, not the request's).
Progress is written to the store at most every `PROGRESS_EVERY_S`; a restart finds
jobs that were queued or running and marks them failed (`interrupted`), so no job is
lost or left "running" forever; the client resubmits.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    select,
    update,
)

from aidx.inference.errors import AidxError, NotFound
from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.store import metadata
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

wsi_jobs = Table(
    "wsi_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("state", String(16), nullable=False, index=True),
    Column("slide_path", Text, nullable=False),  # never sent to clients nor logged
    Column("uploaded", Boolean, nullable=False, default=False),
    Column("mpp", Float, nullable=True),  # the request's MPP, if it gave one
    Column("slide", JSON, nullable=True),  # SlideInfo.summary()
    Column("params", JSON, nullable=False),
    Column("submitted_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("tiles_total", Integer, nullable=True),
    Column("tiles_done", Integer, nullable=False, default=0),
    Column("rate_tiles_s", Float, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("report_id", String(36), nullable=True),
)


def _now() -> datetime:
    return datetime.now(UTC)


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

    @property
    def eta_s(self) -> float | None:
        if self.state is not JobState.running or not self.rate_tiles_s or not self.tiles_total:
            return None
        return max(0.0, (self.tiles_total - self.tiles_done) / self.rate_tiles_s)


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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

    def fail_interrupted(self) -> int:
        """At start-up: jobs a previous process left queued or running."""
        statement = (
            update(wsi_jobs)
            .where(wsi_jobs.c.state.in_([s.value for s in ACTIVE]))
            .values(
                state=JobState.failed.value,
                finished_at=_now(),
                error_code="interrupted",
                error_message="the service stopped before the job finished; submit it again",
            )
        )
        with self.engine.begin() as conn:
            return int(conn.execute(statement).rowcount)


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
    )


class JobRunner:
    """Runs jobs as asyncio tasks, at most `max_running` at a time."""

    def __init__(
        self,
        store: JobStore,
        models: ModelService,
        reports: ReportStore,
        *,
        max_running: int = 1,
        readers: int = 0,
        links: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.reports = reports
        self.readers = readers
        self.links = links
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()

    def start(self) -> int:
        interrupted = self.store.fail_interrupted()
        if interrupted:
            log.warning("%d whole-slide job(s) were interrupted by a restart", interrupted)
        return interrupted

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
                    error_message="the service stopped before the job finished; submit it again",
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
            self.store.update, job_id, only_if=ACTIVE, state=JobState.running, started_at=_now()
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
