"""Step 5: rule bits to what a technician reads: per result the interpretation
(HL7 v2 OBX-8 / v3 ObservationInterpretation), flags and reasons; per specimen the
reasons of the specimen-level rules."""

from __future__ import annotations

import math

import numpy as np

from aidx.inference.reports import Coding
from aidx.pipelines.labs.catalogue import Analyte, Delta
from aidx.pipelines.labs.normalize import Normalized
from aidx.pipelines.labs.reference import reference_label
from aidx.pipelines.labs.rules import (
    EDTA_CA_WITHOUT_MG_ALP_MMOL_L,
    IV_CHLORIDE_MMOL_L,
    IV_GLUCOSE_MMOL_L,
    SPECIMEN_RULES,
    Rule,
    rule_names,
)
from aidx.pipelines.labs.types import (
    Anomaly,
    Previous,
    Reason,
    ReferenceInterval,
    ResultOutcome,
    ResultStatus,
    SpecimenOutcome,
)

_SPECIMEN_TEXT = {
    Rule.edta_contamination: (
        "K2-EDTA contamination suspected: high potassium with low calcium and low "
        f"magnesium or ALP (or calcium < {EDTA_CA_WITHOUT_MG_ALP_MMOL_L} mmol/L); recollect"
    ),
    Rule.haemolysis: (
        "haemolysis: the haemolysis index is above its limit, or potassium, LDH and AST "
        "are all high without an index; potassium, LDH and AST are unreliable"
    ),
    Rule.iv_fluid_contamination: (
        "IV-fluid contamination suspected: most analytes diluted with glucose > "
        f"{IV_GLUCOSE_MMOL_L} mmol/L or chloride > {IV_CHLORIDE_MMOL_L} mmol/L; recollect"
    ),
    Rule.wrong_blood_in_tube: (
        "wrong blood in tube suspected: MCV, MCH and RDW changed together beyond one "
        "person's variation (index {stat:.1f}); confirm identity and recollect"
    ),
    Rule.multivariate_anomaly: (
        "multivariate anomaly: this combination of values is improbable "
        "(score {score:.1f}, tail p {p:.1e}); main contributors: {names}"
    ),
}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def interpretation(bits: int, status: ResultStatus) -> str:
    if status is not ResultStatus.screened:
        return "A" if status is ResultStatus.impossible_value else ""
    if bits & Rule.critical_high:
        return "HH"
    if bits & Rule.critical_low:
        return "LL"
    if bits & Rule.wrong_blood_in_tube:
        return "AA"
    if bits & Rule.high:
        return "H"
    if bits & Rule.low:
        return "L"
    if bits:
        return "A"
    return "N"


def _limit_reasons(
    a: Analyte, v: float, bits: int, ref: tuple[float, float], interval: ReferenceInterval | None
) -> list[Reason]:
    """Why a value is flagged against its critical limits and reference interval (the
    latter named: its partition and source)."""
    reasons: list[Reason] = []
    unit, crit = a.unit, a.critical
    if bits & Rule.critical_high and crit is not None and crit.high is not None:
        reasons.append(
            Reason(
                rule="critical_high",
                message=f"{a.name} {_fmt(v)} {unit} is above the critical limit "
                f"{_fmt(crit.high)} ({crit.source})",
            )
        )
    if bits & Rule.critical_low and crit is not None and crit.low is not None:
        reasons.append(
            Reason(
                rule="critical_low",
                message=f"{a.name} {_fmt(v)} {unit} is below the critical limit "
                f"{_fmt(crit.low)} ({crit.source})",
            )
        )
    if bits & (Rule.high | Rule.low):
        side = "above" if bits & Rule.high else "below"
        named = f" ({reference_label(interval)})" if interval is not None else ""
        reasons.append(
            Reason(
                rule="high" if bits & Rule.high else "low",
                message=f"{a.name} {_fmt(v)} {unit} is {side} the reference interval "
                f"{_fmt(ref[0])}-{_fmt(ref[1])}{named}",
            )
        )
    return reasons


def _delta_reason(a: Analyte, delta: Delta, v: float, previous: Previous) -> Reason:
    """Why a value is flagged against the patient's previous one."""
    unit = a.unit
    change = v - previous.value
    limit = f"{_fmt(delta.abs)} {unit}" if delta.abs is not None else f"{delta.percent_limit:.1f} %"
    pct = f" ({100 * change / previous.value:+.0f} %)" if previous.value else ""
    return Reason(
        rule="delta",
        message=f"{a.name} changed from {_fmt(previous.value)} to {_fmt(v)} {unit}"
        f"{pct} since {previous.collected_at.isoformat()}; the delta limit is "
        f"{limit} within {delta.window_h:g} h ({delta.source})",
    )


def _result_reasons(
    n: Normalized,
    bits: int,
    ref: tuple[float, float],
    interval: ReferenceInterval | None,
    previous: Previous | None,
) -> list[Reason]:
    """A result that could not be screened: why; a screened one: each rule it broke."""
    a = n.analyte
    if n.status is not ResultStatus.screened:
        return [Reason(rule=n.status.value, message=n.message or n.status.value)]
    if a is None or n.canonical is None:
        return []
    reasons = _limit_reasons(a, n.canonical, bits, ref, interval)
    if bits & Rule.delta and previous is not None and a.delta is not None:
        reasons.append(_delta_reason(a, a.delta, n.canonical, previous))
    return reasons


def describe_result(
    n: Normalized,
    bits: int,
    ref_low: float,
    ref_high: float,
    previous: Previous | None,
    contribution: float | None,
    interval: ReferenceInterval | None = None,
) -> ResultOutcome:
    """`interval`: the catalogue interval that gave `ref_low`/`ref_high`, if any."""
    a = n.analyte
    reasons = _result_reasons(n, bits, (ref_low, ref_high), interval, previous)
    flags = rule_names(bits) if n.status is ResultStatus.screened else [n.status.value]
    return ResultOutcome(
        code=n.result.code,
        concept=Coding(scheme="LN", code=a.loinc[0], meaning=a.name) if a else None,
        analyte=a.key if a else None,
        value=n.result.value,
        unit=n.result.unit,
        value_canonical=n.canonical,
        unit_canonical=a.unit if a else None,
        status=n.status,
        interpretation=interpretation(bits, n.status),
        flags=flags,
        reasons=reasons,
        reference_low=_finite(ref_low),
        reference_high=_finite(ref_high),
        reference_interval=interval,
        previous=previous,
        anomaly_contribution=contribution,
        observation_id=n.result.observation_id,
        result_status=n.result.status,
    )


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def describe_specimen(
    bits: int, results: list[ResultOutcome], wbit_stat: float, anomaly: Anomaly | None
) -> list[Reason]:
    reasons = []
    for rule in Rule:
        if not (bits & rule and rule & SPECIMEN_RULES) or rule.name is None:
            continue
        text = _SPECIMEN_TEXT[rule]
        if rule is Rule.wrong_blood_in_tube:
            text = text.format(stat=float(np.nan_to_num(wbit_stat)))
        elif rule is Rule.multivariate_anomaly and anomaly is not None:
            top = sorted(
                (r for r in results if rule.name in r.flags),
                key=lambda r: -(r.anomaly_contribution or 0.0),
            )
            text = text.format(
                score=anomaly.score,
                p=1.0 - anomaly.probability,
                names=", ".join(r.analyte or r.code for r in top[:4]),
            )
        reasons.append(Reason(rule=rule.name, message=text))
    return reasons


def summary(outcome: SpecimenOutcome) -> str:
    """One line for an ACK or a log line: no patient data."""
    rules = sorted({r.rule for r in outcome.reasons})
    return f"{outcome.verdict.value}: {', '.join(rules) or 'no findings'}"
