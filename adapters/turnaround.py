"""Turnaround: for each report, the seconds from its input received to analysed and
to delivered at each write-back destination, as the `aidx_turnaround_seconds`
histogram (pipeline, stage) and as the report's `turnaround` block.

Received and analysed are stamped on the report by the analysis step; a delivery
is the outbox's: a destination has the report once every object for it is
delivered, after its build (the build queues them all before it is marked done).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from aidx.inference.errors import NotFound
from aidx.inference.reports import Delivery, Report, ReportStore
from aidx.integrations.outbox.store import Entry, OutboxStore, ReportProgress, State

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Report)

# (pipeline, stage, seconds): ServiceMetrics.observe_turnaround
Observe = Callable[[str, str, float], None]
ANALYSED = "analysed"
BUILD = "build"
# outbox destination -> the name a turnaround gives it (the EMR's objects are FHIR)
DESTINATION_NAMES = {"pacs": "pacs", "emr": "fhir", "hl7": "hl7"}


def stage(destination: str) -> str:
    return f"delivered_{DESTINATION_NAMES.get(destination, destination)}"


class TurnaroundTracker:
    def __init__(
        self,
        store: OutboxStore,
        reports: ReportStore,
        destinations: list[str],
        observe: Observe | None,
    ) -> None:
        """`destinations`: the configured write-back destinations (not the build)."""
        self.store = store
        self.reports = reports
        self.destinations = [d for d in destinations if d != BUILD]
        self.observe = observe

    def delivered(self, entry: Entry) -> None:
        """The outbox delivered `entry`: if it completes its report at its destination,
        observe that stage (called in the worker's thread)."""
        if self.observe is None or entry.report_id is None or entry.destination == BUILD:
            return
        progress = self.store.report_progress(entry.report_id)
        done = progress.get(entry.destination)
        if not _built(progress) or done is None or done.state is not State.delivered:
            return
        try:
            report = self.reports.load(entry.report_id)
        except NotFound:
            return
        if report.turnaround is None or done.last_delivered_at is None:
            return
        received_s = report.turnaround.received_at.timestamp()
        self.observe(report.pipeline, stage(entry.destination), done.last_delivered_at - received_s)

    def with_deliveries(self, report: R) -> R:
        """`report` with its turnaround's deliveries as the outbox has them now."""
        if report.turnaround is None or not self.destinations:
            return report
        progress = self.store.report_progress(report.id)
        if BUILD not in progress:  # written back off when it was made
            return report
        received_s = report.turnaround.received_at.timestamp()
        deliveries = [
            _delivery(name, progress, received_s)
            for name in self.destinations
            if name in progress or not _built(progress)
        ]
        turnaround = report.turnaround.model_copy(update={"deliveries": deliveries})
        return report.model_copy(update={"turnaround": turnaround})


def _built(progress: dict[str, ReportProgress]) -> bool:
    build = progress.get(BUILD)
    return build is not None and build.state is State.delivered


def _delivery(name: str, progress: dict[str, ReportProgress], received_s: float) -> Delivery:
    found = progress.get(name)
    label = DESTINATION_NAMES.get(name, name)
    if found is None:  # not built yet
        failed = progress[BUILD].state is State.failed
        return Delivery(destination=label, state="failed" if failed else "pending")
    state = found.state
    if state is not State.delivered or found.last_delivered_at is None:
        return Delivery(destination=label, state=state.value)
    return Delivery(
        destination=label,
        state=state.value,
        delivered_at=datetime.fromtimestamp(found.last_delivered_at, UTC),
        seconds=round(found.last_delivered_at - received_s, 3),
    )
