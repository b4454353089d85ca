"""The one analysis step every intake calls (REST, C-STORE, DICOMweb pull, MLLP):
analyze → save the report → enqueue its write-back → audit.

The pipeline only analyzes (and keeps its evidence files beside the report); what
happens to its result is decided here, once, so that every intake gets the same
durable write-back and the same audit trail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aidx.adapters.turnaround import ANALYSED, Observe
from aidx.adapters.writeback import Writeback
from aidx.inference.audit import AuditLog
from aidx.inference.pipeline import Pipeline
from aidx.inference.reports import Report, ReportStore, Turnaround

log = logging.getLogger(__name__)
InputT = TypeVar("InputT")
ResultT = TypeVar("ResultT")
R = TypeVar("R", bound=Report)
In_contra = TypeVar("In_contra", contravariant=True)
Out_contra = TypeVar("Out_contra", contravariant=True)


@dataclass(frozen=True)
class Actor:
    """Who asked: a user's key name and role, or an intake (`scp:AET`, `mllp:APP`)."""

    name: str
    role: str


@dataclass(frozen=True)
class Audited:
    """What the audit trail records for a result: the action, and each resource it
    created with its outcome."""

    action: str
    entries: Sequence[tuple[str, str]]


class Recorder(Protocol[In_contra, Out_contra]):
    """Keeps a result once it is made (saved, queued for write-back)."""

    async def record(
        self, data: In_contra, result: Out_contra, *, priority: int | None
    ) -> None: ...


class ReportRecorder(Generic[R]):
    """Imaging reports: saved, their build record put in the outbox (when write-back is
    on) before the caller answers, and saved again with the time that took."""

    def __init__(self, reports: ReportStore, writeback: Writeback | None) -> None:
        self.reports = reports
        self.writeback = writeback

    async def record(
        self, data: bytes | Sequence[bytes], result: R, *, priority: int | None
    ) -> None:
        await asyncio.to_thread(self.reports.save, result, {}, priority=priority)
        if self.writeback is None:
            return
        started = time.perf_counter()
        sources = [data] if isinstance(data, bytes) else list(data)
        await self.writeback.submit(result, sources, priority=priority)
        writeback_ms = (time.perf_counter() - started) * 1e3
        result.timings.writeback_ms = round(writeback_ms, 2)
        result.timings.total_ms = round(result.timings.total_ms + writeback_ms, 2)
        await asyncio.to_thread(
            self.reports.save, result, {}, priority=priority
        )  # with its timings


def report_created(report: Report) -> Audited:
    return Audited("report.create", [(f"report/{report.id}", "ok")])


class AnalysisStep(Generic[InputT, ResultT]):
    def __init__(
        self,
        pipeline: Pipeline[InputT, ResultT],
        audit: AuditLog,
        *,
        recorder: Recorder[InputT, ResultT] | None,
        audited: Callable[[ResultT], Audited],
        action: str | None = None,
        observe: Observe | None = None,
        watch: Callable[[ResultT], None] | None = None,
    ) -> None:
        """`action` names the analysis in the audit trail (default `<pipeline>.analyze`);
        `observe` is told the seconds from received to analysed of each run; `watch`
        is given each result once recorded (drift monitoring: DriftMonitor.watch)."""
        self.pipeline = pipeline
        self.action = action or f"{pipeline.name}.analyze"
        self.audit = audit
        self.recorder = recorder
        self.audited = audited
        self.observe = observe
        self.watch = watch

    @property
    def name(self) -> str:
        return self.pipeline.name

    async def run(
        self,
        data: InputT,
        actor: Actor,
        *,
        priority: int | None = None,
        timeout_s: float | None = None,
        received_at: float | None = None,
    ) -> ResultT:
        """`received_at`: when the input arrived (POSIX seconds; default: now)."""
        received_s = time.time() if received_at is None else received_at
        with self.audit.access(
            actor=actor.name, role=actor.role, action=self.action, resource="upload"
        ):
            result = await self.pipeline.analyze(data, priority=priority, timeout_s=timeout_s)
        self._analysed(result, received_s)
        if self.recorder is not None:
            await self.recorder.record(data, result, priority=priority)
        if self.watch is not None:
            await asyncio.to_thread(self._watched, result)
        audited = self.audited(result)
        for resource, outcome in audited.entries:
            self.audit.record(
                actor=actor.name,
                role=actor.role,
                action=audited.action,
                resource=resource,
                outcome=outcome,
            )
        return result

    def _watched(self, result: ResultT) -> None:
        """Monitoring never fails an analysis: a store that refuses the row is logged."""
        assert self.watch is not None
        try:
            self.watch(result)
        except Exception:
            log.exception("%s: the drift observation was not kept", self.name)

    def _analysed(self, result: ResultT, received_s: float) -> None:
        analysed_s = time.time()
        if isinstance(result, Report):  # kept with the report, shown when it is read
            result.turnaround = Turnaround.between(received_s, analysed_s)
        if self.observe is not None:
            self.observe(self.name, ANALYSED, analysed_s - received_s)


class ActingAs(Generic[InputT, ResultT]):
    """An analysis step run on one actor's behalf: what an intake (the C-STORE SCP, a
    DICOMweb pull) calls as `analyze(data)`. `received_at` (POSIX seconds): when the
    inputs were asked for (a pull's request), unless `analyze` is told otherwise."""

    def __init__(
        self,
        step: AnalysisStep[InputT, ResultT],
        actor: Actor,
        received_at: float | None = None,
    ) -> None:
        self.step = step
        self.actor = actor
        self.received_at = received_at

    async def analyze(self, data: InputT, received_at: float | None = None) -> ResultT:
        when = self.received_at if received_at is None else received_at
        return await self.step.run(data, self.actor, received_at=when)
