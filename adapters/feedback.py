"""What a clinician can answer on: a report's findings (CXR, CT: by label; whole
slides: also each region of a finding) or a lab alert (one finding, named by its
rule), and which role owns it. The review workspace reads this shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from aidx.inference.cohort import AgeBand, Cohort, Sex
from aidx.inference.errors import NotFound, Unprocessable
from aidx.inference.feedback import Answer, AnswerIn, FeedbackStore, Subject
from aidx.inference.report_index import ReportIndex
from aidx.inference.reports import Report, ReportStore
from aidx.inference.settings import Role
from aidx.pipelines.labs.store import Alert, LabStore

OWNERS = {"cxr": Role.radiologist, "ct": Role.radiologist, "wsi": Role.pathologist}
LABS = "labs"


class Answerable(BaseModel):
    """A finding one can answer on, and how many regions it has (0: the whole only)."""

    finding: str
    regions: int = 0


class FeedbackView(BaseModel):
    report_id: str
    pipeline: str
    owner_role: Role = Field(description="the role whose members answer")
    findings: list[Answerable]
    current: list[Answer] = Field(description="each user's latest answer per finding")
    history: list[Answer] = Field(description="every answer, oldest first")


class FeedbackSaved(FeedbackView):
    recorded: int = Field(description="answers recorded; 0 when all were already current")


@dataclass(frozen=True)
class Target:
    subject: Subject
    owner: Role
    findings: Sequence[Answerable]

    def check(self, answers: Sequence[AnswerIn]) -> None:
        """422 for an answer on a finding (or region) the report does not have."""
        known = {f.finding: f.regions for f in self.findings}
        for answer in answers:
            if answer.finding not in known:
                raise Unprocessable(
                    f"the report has no finding {answer.finding!r}",
                    code="unknown_finding",
                    findings=sorted(known),
                )
            if answer.region is not None and answer.region >= known[answer.finding]:
                raise Unprocessable(
                    f"finding {answer.finding!r} has no region {answer.region}",
                    code="unknown_region",
                    regions=known[answer.finding],
                )


def _report_target(report: Report) -> Target:
    findings = [
        Answerable(finding=f.concept.meaning, regions=len(f.regions)) for f in report.findings
    ]
    present = {f.concept.meaning: f.present for f in report.findings}
    model, source = report.model, report.source
    cohort = Cohort.of(
        station=source.station_name,
        institution=source.institution_name,
        sex=source.patient_sex,
        age_y=source.patient_age_y,
    )
    subject = Subject(report.id, report.pipeline, model.name, model.version, present, cohort)
    return Target(subject, OWNERS.get(report.pipeline, Role.radiologist), findings)


def _alert_cohort(evidence: dict[str, Any]) -> Cohort:
    """The groups an alert keeps in its evidence (alerts from before: unknown)."""
    sex, band = evidence.get("sex"), evidence.get("age_band")
    return Cohort(
        sex=Sex(sex) if sex in set(Sex) else Sex.unknown,
        age_band=AgeBand(band) if band in set(AgeBand) else AgeBand.unknown,
    )


def _alert_target(alert: Alert) -> Target:
    present = {alert.rule: True}  # an alert: the rule said present
    subject = Subject(alert.id, LABS, None, None, present, _alert_cohort(alert.evidence))
    return Target(subject, Role.lab, [Answerable(finding=alert.rule)])


class Feedback:
    """Feedback on reports (from the report store) and lab alerts (the lab store);
    each answer updates the report's review state in the worklist's `index`."""

    def __init__(
        self,
        store: FeedbackStore,
        reports: ReportStore,
        alerts: LabStore,
        index: ReportIndex | None = None,
    ) -> None:
        self.store = store
        self.reports = reports
        self.alerts = alerts
        self.index = index

    def target(self, rid: str) -> Target:
        try:
            return _report_target(self.reports.load(rid))
        except NotFound:
            pass
        try:
            return _alert_target(self.alerts.alert(rid))
        except NotFound:
            raise NotFound(f"no report {rid!r}", code="report_not_found") from None

    def view(self, target: Target) -> FeedbackView:
        history = self.store.history(target.subject.report_id)
        return FeedbackView(
            report_id=target.subject.report_id,
            pipeline=target.subject.pipeline,
            owner_role=target.owner,
            findings=list(target.findings),
            current=[a for a in history if a.current],
            history=history,
        )

    def record(
        self, target: Target, actor: str, role: Role, answers: Sequence[AnswerIn]
    ) -> FeedbackSaved:
        target.check(answers)
        recorded = self.store.record(target.subject, actor, role.value, answers)
        view = self.view(target)
        if self.index is not None and recorded:
            self.index.set_review(view.report_id, [a.verdict.value for a in view.current])
        return FeedbackSaved(**view.model_dump(), recorded=recorded)
