"""Which reference interval applied, in words a technician reads: the partition it
belongs to ("child 10 d-18 y", "female adult from 18 y") and the source it cites.

`applied_intervals` turns each catalogue interval into a `ReferenceInterval` once, so
that screening names the interval of every result by the position the rules found
(`RuleOutcome.ref_index`) without building anything per result.
"""

from __future__ import annotations

from aidx.pipelines.labs.catalogue import NO_INTERVAL, Catalogue, Interval
from aidx.pipelines.labs.types import ReferenceInterval

NEWBORN_Y = 1 / 12  # the first month of life (Harriet Lane's "newborn")
ADULT_Y = 18.0
ALL_AGES_Y = (0.0, 150.0)  # an interval's default age band
_EPS_Y = 1e-6
# UCUM unit, years per unit, as written; the first that gives a whole number wins
_AGE_UNITS = (("a", 1.0, "y"), ("mo", 1 / 12, "mo"), ("d", 1 / 365.25, "d"), ("h", 1 / 8766, "h"))


def age_quantity(age_y: float) -> tuple[float, str]:
    """An age as the catalogue writes it: (2, "a"), (1, "mo"), (10, "d"); UCUM units."""
    for code, years, _ in _AGE_UNITS:
        count = age_y / years
        if abs(count - round(count)) < 1e-6 * max(1.0, count):
            return float(round(count)), code
    return round(age_y, 4), "a"


def age_text(age_y: float) -> str:
    value, code = age_quantity(age_y)
    shown = next(text for unit, _, text in _AGE_UNITS if unit == code)
    return f"{value:g} {shown}"


def _group(age_from_y: float, age_to_y: float) -> str:
    if age_to_y <= NEWBORN_Y + _EPS_Y:
        return "newborn"
    if age_to_y <= ADULT_Y + _EPS_Y:
        return "child"
    return "adult" if age_from_y >= ADULT_Y - _EPS_Y else ""


def _ages(age_from_y: float, age_to_y: float) -> str:
    starts, ends = age_from_y <= _EPS_Y, age_to_y >= ALL_AGES_Y[1] - _EPS_Y
    if starts and ends:
        return "all ages"
    if starts:
        return f"under {age_text(age_to_y)}"
    if ends:
        return f"from {age_text(age_from_y)}"
    return f"{age_text(age_from_y)}-{age_text(age_to_y)}"


def partition_text(interval: Interval) -> str:
    """In words: "child 10 d-18 y", "female adult from 18 y", "newborn under 10 d"."""
    start, end = interval.age_y
    sex = "" if interval.sex == "any" else interval.sex
    return " ".join(part for part in (sex, _group(start, end), _ages(start, end)) if part)


def is_partitioned(interval: Interval) -> bool:
    """The interval is one of several by sex or age (it does not cover everyone)."""
    start, end = interval.age_y
    return interval.sex != "any" or abs(start - ALL_AGES_Y[0]) > _EPS_Y or end < ALL_AGES_Y[1]


def reference_interval(catalogue: Catalogue, interval: Interval) -> ReferenceInterval:
    return ReferenceInterval(
        low=interval.low,
        high=interval.high,
        sex=interval.sex,
        age_from_y=interval.age_y[0],
        age_to_y=interval.age_y[1],
        partitioned=is_partitioned(interval),
        partition=partition_text(interval),
        source=interval.source,
        source_name=catalogue.source_name(interval.source),
        source_citation=catalogue.sources[interval.source],
    )


class AppliedIntervals:
    """Every catalogue interval as a `ReferenceInterval`, built once, looked up by
    analyte column and position (frozen models: outcomes share them safely)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._by_column = [
            [reference_interval(catalogue, i) for i in a.reference] for a in catalogue.analytes
        ]

    def get(self, column: int, index: int) -> ReferenceInterval | None:
        return None if index == NO_INTERVAL else self._by_column[column][index]


def reference_label(interval: ReferenceInterval) -> str:
    """What a message puts in brackets after the bounds: "child 10 d-18 y, Harriet Lane"."""
    return f"{interval.partition}, {interval.source_name}"
