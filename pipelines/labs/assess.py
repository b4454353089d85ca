"""Step 5b: knowing when not to answer. A result is *assessed* only when a reference
interval applies to this patient (age band, sex) and its value can be compared with
it; otherwise it is not assessed, with a stable reason code and a message, and held
for review. A critical limit still applies to every result whatever its interval.

Censored values (`<3`, `>90`) are checked against the limits alone: a limit the
censored range lies wholly on one side of decides; one it straddles does not.
"""

from __future__ import annotations

import enum
import math

from aidx.inference.assessment import NotAssessedReason
from aidx.pipelines.labs.catalogue import Analyte, RefState
from aidx.pipelines.labs.rules import Rule
from aidx.pipelines.labs.types import (
    Censored,
    Comparator,
    NotAssessedCode,
    Reason,
    ResultOutcome,
    ResultStatus,
    SpecimenIn,
)


class Side(enum.Enum):
    no = 0
    yes = 1
    maybe = 2


def _above(comparator: Comparator, v: float, ceiling: float, limit: float) -> Side:
    """Whether a value known as `comparator v` (and <= `ceiling`) is above `limit`."""
    if math.isnan(limit):
        return Side.no
    if comparator in (Comparator.lt, Comparator.le):
        return Side.no if v <= limit else Side.maybe
    if v > limit or (v == limit and comparator is Comparator.gt):
        return Side.yes
    return Side.no if ceiling <= limit else Side.maybe


def _below(comparator: Comparator, v: float, floor: float, limit: float) -> Side:
    """Whether a value known as `comparator v` (and >= `floor`) is below `limit`."""
    if math.isnan(limit):
        return Side.no
    if comparator in (Comparator.gt, Comparator.ge):
        return Side.no if v >= limit else Side.maybe
    if v < limit or (v == limit and comparator is Comparator.lt):
        return Side.yes
    return Side.no if floor >= limit else Side.maybe


def censored_bits(
    comparator: Comparator,
    value: float,
    analyte: Analyte,
    ref: tuple[float, float],
    critical: tuple[float, float],
) -> tuple[int, bool]:
    """(Rule bits, decidable) of a censored value against the reference interval
    `ref` (low, high) and the critical limits (low, high); NaN: no such limit."""
    floor, ceiling = analyte.plausible
    checks = (
        (_above(comparator, value, ceiling, critical[1]), Rule.critical_high),
        (_below(comparator, value, floor, critical[0]), Rule.critical_low),
        (_above(comparator, value, ceiling, ref[1]), Rule.high),
        (_below(comparator, value, floor, ref[0]), Rule.low),
    )
    bits = 0
    for side, rule in checks:
        if side is Side.yes:
            bits |= int(rule)
    decidable = all(side is not Side.maybe for side, _ in checks)
    return bits, decidable


def _age_text(age_y: float) -> str:
    if age_y < 1 / 12:
        return f"{age_y * 365.25:.0f} days"
    if age_y < 2:
        return f"{age_y * 12:.0f} months"
    return f"{age_y:.0f} years"


def reference_reason(
    state: RefState, analyte: Analyte, specimen: SpecimenIn
) -> tuple[NotAssessedReason, str]:
    """The engine's reason code and a message for a result without an interval."""
    name = analyte.name
    if state is RefState.sex_unknown:
        return NotAssessedReason.sex_unknown, (
            f"{name}: the reference interval depends on sex and the patient's sex is "
            "unknown; not assessed against an interval"
        )
    if state is RefState.age_unknown:
        return NotAssessedReason.age_unknown, (
            f"{name}: the reference interval depends on age and the patient's age is "
            "unknown; not assessed against an interval"
        )
    age = _age_text(specimen.age_y) if specimen.age_y is not None else "unknown age"
    return NotAssessedReason.no_reference_interval, (
        f"{name}: the catalogue has no reference interval for a patient of {age}"
        f"{'' if specimen.sex is None else f' (sex {specimen.sex})'}; not assessed "
        "against an interval"
    )


def censored_message(outcome: ResultOutcome, analyte: Analyte) -> str:
    low, high = outcome.reference_low, outcome.reference_high
    interval = f"{low:g}-{high:g}" if low is not None and high is not None else "its limits"
    return (
        f"{analyte.name} {outcome.comparator}{outcome.value_canonical:.4g} {analyte.unit}: "
        f"the value is known only as a limit and may lie on either side of {interval}; "
        "not assessed"
    )


def mark_not_assessed(outcome: ResultOutcome, code: NotAssessedCode, message: str) -> None:
    """The outcome of a result that was not judged against an interval: never "N";
    a critical or pattern flag stands; the reason among its reasons."""
    outcome.assessed = False
    outcome.not_assessed_reason = code
    outcome.not_assessed_message = message
    if outcome.status is not ResultStatus.screened:
        return  # its status is its reason, already listed
    if outcome.interpretation == "N":  # critical and pattern flags stand
        outcome.interpretation = ""
    outcome.flags.append(code.value)
    outcome.reasons.append(Reason(rule=code.value, message=message))


def assess(
    outcome: ResultOutcome,
    analyte: Analyte | None,
    state: RefState,
    decidable: bool,
    specimen: SpecimenIn,
) -> None:
    """Mark `outcome` not assessed when it has no status, interval or decidable value."""
    if outcome.status is not ResultStatus.screened:
        mark_not_assessed(outcome, outcome.status, outcome.reasons[0].message)
    elif analyte is None:
        return
    elif state is not RefState.assessed:
        mark_not_assessed(outcome, *reference_reason(state, analyte, specimen))
    elif not decidable:
        mark_not_assessed(outcome, Censored.censored_value, censored_message(outcome, analyte))


def not_assessed_reasons(results: list[ResultOutcome]) -> list[Reason]:
    """One specimen-level reason per kind of not-assessed result, naming them."""
    by_code: dict[str, list[str]] = {}
    for r in results:
        if not r.assessed and r.not_assessed_reason is not None:
            by_code.setdefault(r.not_assessed_reason.value, []).append(r.analyte or r.code)
    return [
        Reason(rule=code, message=f"not assessed ({code}): {', '.join(names)}; review")
        for code, names in by_code.items()
    ]
