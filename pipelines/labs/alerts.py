"""Step 6: the alerts a screened specimen raises, each with its evidence: critical
values and delta failures per result, specimen-level findings (integrity patterns,
wrong blood in tube, the anomaly model), and one `review` alert for a specimen held
for review that nothing else would put in front of a technician (results not
assessed, unknown codes, text or impossible values), so that every review and
critical verdict is in the one alert feed whatever the intake."""

from __future__ import annotations

from aidx.inference.cohort import age_band, sex_group
from aidx.pipelines.labs.rules import INTEGRITY, Rule
from aidx.pipelines.labs.store import NewAlert
from aidx.pipelines.labs.types import (
    Anomaly,
    Reason,
    ResultOutcome,
    SpecimenIn,
    Verdict,
)

SUSPECT = INTEGRITY | Rule.wrong_blood_in_tube
REVIEW_RULE = "review"


def alerting(rule: str) -> bool:
    return rule in {"critical_high", "critical_low", "delta"}


def cohort_of(s: SpecimenIn) -> dict[str, str]:
    """The patient's coarse groups, kept with each alert for agreement per subgroup."""
    return {"sex": sex_group(s.sex).value, "age_band": age_band(s.age_y).value}


def evidence_value(outcome: ResultOutcome) -> dict[str, object]:
    return outcome.model_dump(
        mode="json",
        include={
            "code",
            "analyte",
            "value",
            "unit",
            "value_canonical",
            "unit_canonical",
            "interpretation",
            "reference_low",
            "reference_high",
            "reference_interval",
            "previous",
            "anomaly_contribution",
            "observation_id",
            "comparator",
        },
    )


def result_alerts(
    s: SpecimenIn, outcome: ResultOutcome, bits: int, verdict: Verdict
) -> list[NewAlert]:
    alerts = []
    for reason in outcome.reasons:
        if not alerting(reason.rule):
            continue
        critical = reason.rule.startswith("critical") and not bits & int(SUSPECT)
        alerts.append(
            NewAlert(
                patient_id=s.patient_id,
                specimen_id=s.specimen_id,
                rule=reason.rule,
                analyte=outcome.analyte,
                severity="critical" if critical else "warning",
                message=reason.message,
                evidence={
                    "rule": reason.rule,
                    "collected_at": s.collected_at.isoformat(),
                    **cohort_of(s),
                    "verdict": verdict.value,
                    "values": [evidence_value(outcome)],
                },
                source_id=s.source_id,
            )
        )
    return alerts


def specimen_alert(
    s: SpecimenIn, reason: Reason, results: list[ResultOutcome], anomaly: Anomaly | None
) -> NewAlert:
    involved = [evidence_value(r) for r in results if reason.rule in r.flags]
    evidence: dict[str, object] = {
        "rule": reason.rule,
        "collected_at": s.collected_at.isoformat(),
        **cohort_of(s),
        "values": involved,
    }
    if anomaly is not None and reason.rule == Rule.multivariate_anomaly.name:
        evidence["anomaly"] = anomaly.model_dump(mode="json")
    return NewAlert(
        patient_id=s.patient_id,
        specimen_id=s.specimen_id,
        rule=reason.rule,
        analyte=None,
        severity="warning",
        message=reason.message,
        evidence=evidence,
        source_id=s.source_id,
    )


def review_alert(
    s: SpecimenIn,
    verdict: Verdict,
    reasons: list[Reason],
    results: list[ResultOutcome],
    raised: int,
) -> NewAlert | None:
    """The specimen's `review` alert: when some of its results were not assessed, or
    when it is held for review and raised no other alert."""
    unassessed = [r for r in results if not r.assessed]
    if not unassessed and (verdict is not Verdict.review or raised):
        return None
    held = [r.message for r in reasons] or [
        f"{r.analyte or r.code}: {r.not_assessed_message}" for r in unassessed
    ]
    return NewAlert(
        patient_id=s.patient_id,
        specimen_id=s.specimen_id,
        rule=REVIEW_RULE,
        analyte=None,
        severity="warning",
        message=f"{verdict.value}: " + "; ".join(held)[:900],
        evidence={
            "rule": REVIEW_RULE,
            "collected_at": s.collected_at.isoformat(),
            **cohort_of(s),
            "verdict": verdict.value,
            "reasons": [r.model_dump(mode="json") for r in reasons],
            "values": [
                {
                    **evidence_value(r),
                    "not_assessed_reason": r.not_assessed_reason,
                    "not_assessed_message": r.not_assessed_message,
                }
                for r in unassessed
            ],
        },
        source_id=s.source_id,
    )
