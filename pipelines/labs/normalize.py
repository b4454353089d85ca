"""Step 1: each incoming result to its catalogue analyte and canonical value, or a
status saying why it cannot be screened. Nothing is guessed: an unknown code, a unit
without a listed conversion, a non-numeric or impossible value is reported as such."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aidx.pipelines.labs.catalogue import Analyte, Catalogue
from aidx.pipelines.labs.types import Comparator, LabResultIn, ResultStatus, SpecimenIn

FINAL_STATUSES = {"F", "C", "FINAL", "CORRECTED", "AMENDED"}


@dataclass
class Normalized:
    result: LabResultIn
    analyte: Analyte | None
    column: int | None
    canonical: float | None
    status: ResultStatus
    message: str | None = None


@dataclass
class NormalizedSpecimen:
    specimen: SpecimenIn
    results: list[Normalized]
    columns: dict[int, float] = field(default_factory=dict)  # column -> canonical value
    # column -> canonical limit of a `<`/`>` result: kept out of the model, the delta
    # checks and the history (its value is not known), checked against the limits alone
    censored: dict[int, tuple[Comparator, float]] = field(default_factory=dict)

    @property
    def invalid(self) -> bool:
        return any(r.status is not ResultStatus.screened for r in self.results)


def parse_number(value: float | str | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(value.strip())
        except ValueError:
            return None  # "<0.01", "positive", "see note": not a number, not guessed
    return number if math.isfinite(number) else None


def normalize_result(catalogue: Catalogue, result: LabResultIn) -> Normalized:
    analyte = catalogue.by_code.get(result.code.strip())
    if analyte is None:
        return Normalized(
            result,
            None,
            None,
            None,
            ResultStatus.unknown_code,
            f"code {result.code!r} is not in the analyte catalogue",
        )
    column = catalogue.index[analyte.key]
    number = parse_number(result.value)
    if number is None:
        return Normalized(
            result,
            analyte,
            column,
            None,
            ResultStatus.not_numeric,
            f"{analyte.name} needs a numeric value, got {str(result.value)[:40]!r}",
        )
    unit = (result.unit or "").strip()
    canonical = analyte.to_canonical(number, unit) if unit else None
    if canonical is None:
        accepted = ", ".join([analyte.unit, *analyte.units])
        return Normalized(
            result,
            analyte,
            column,
            None,
            ResultStatus.unit_not_convertible,
            f"{analyte.name}: unit {unit or 'missing'!r} cannot be converted "
            f"(accepted: {accepted})",
        )
    low, high = analyte.plausible
    if not low <= canonical <= high:
        return Normalized(
            result,
            analyte,
            column,
            canonical,
            ResultStatus.impossible_value,
            f"{analyte.name} {canonical:g} {analyte.unit} is outside the possible "
            f"range {low:g}-{high:g}",
        )
    return Normalized(result, analyte, column, canonical, ResultStatus.screened)


def normalize_specimen(catalogue: Catalogue, specimen: SpecimenIn) -> NormalizedSpecimen:
    out = NormalizedSpecimen(specimen, [])
    for result in specimen.results:
        n = normalize_result(catalogue, result)
        if n.status is ResultStatus.screened and n.column is not None:
            if n.column in out.columns or n.column in out.censored:
                n.status = ResultStatus.duplicate
                n.message = f"{n.analyte.name if n.analyte else n.column} appears twice"
            elif result.comparator is not None:
                out.censored[n.column] = (result.comparator, float(n.canonical or 0.0))
            else:
                out.columns[n.column] = float(n.canonical or 0.0)
        out.results.append(n)
    return out


def is_final(status: str) -> bool:
    return status.strip().upper() in FINAL_STATUSES
