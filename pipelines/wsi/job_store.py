"""Whole-slide jobs: recorded in the service's store (job_runner.py runs them).

Any replica reads any job: the rows live in the shared store.

Several replicas share one store, so a job records its owner (the replica that
accepted it, `replica_id`) and a heartbeat that the owner refreshes for all its active
jobs every `heartbeat_s`. A job whose heartbeat is older than `stale_s` lost its
replica (a crash, a kill, a lost database connection): every replica's heartbeat loop,
and each replica at start-up, marks such jobs failed (`interrupted`), so no job is left
"running" forever; the client resubmits. A replica that starts leaves the live jobs
of the others alone. A replica that stops cleanly marks its own jobs at once.
"""

from __future__ import annotations

import enum
import os
import secrets
import socket
import uuid
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

from aidx.inference.errors import NotFound
from aidx.inference.schema import wsi_jobs


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
    received_at_s: float | None = None  # POSIX seconds; None: as created

    @property
    def received_s(self) -> float:
        """When its slide was received: the start of the report's turnaround."""
        return self.created_at.timestamp() if self.received_at_s is None else self.received_at_s

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
        received_at_s: float | None = None,
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
            "received_at_s": received_at_s,
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

    def slide_of_report(self, report_id: str) -> Path | None:
        """The slide a finished job made report `report_id` from (the newest such job
        whose slide is still on disk: an uploaded slide is deleted after its job)."""
        query = (
            select(wsi_jobs.c.slide_path)
            .where(wsi_jobs.c.report_id == report_id, wsi_jobs.c.state == JobState.succeeded.value)
            .order_by(wsi_jobs.c.finished_at.desc())
        )
        with self.engine.connect() as conn:
            paths = [Path(p) for p in conn.execute(query).scalars()]
        return next((p for p in paths if p.is_file()), None)

    def upload_states(self, upload: Path) -> list[JobState]:
        """The states of the jobs of an upload: a file aidx received, or a DICOM series
        folder (its jobs read a file inside it). Empty if no job names it."""
        under = f"{upload}{os.sep}"
        query = select(wsi_jobs.c.state).where(
            wsi_jobs.c.uploaded.is_(True),
            or_(
                wsi_jobs.c.slide_path == str(upload),
                wsi_jobs.c.slide_path.startswith(under, autoescape=True),
            ),
        )
        with self.engine.connect() as conn:
            return [JobState(state) for state in conn.execute(query).scalars()]

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
        received_at_s=row["received_at_s"],
    )
