"""Agreement between the models and the clinicians, from each user's current answer
per finding (inference/feedback.py): per pipeline, model version and finding, and
optionally per site, sex and age band (inference/cohort.py), the counts by verdict,
the agreement rate and the estimated PPV, each with the count it rests on (no rate
without its n).

agreement rate = agree / (agree + disagree)            n = agree + disagree
estimated PPV  = agree / decided, where the model said present   n = those decided
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, func, select

from aidx.inference.cohort import UNKNOWN, Dimension
from aidx.inference.schema import report_feedback

t = report_feedback
_MODEL_KEYS = ("pipeline", "model", "model_version")
_COLUMNS = {
    "pipeline": t.c.pipeline,
    "model": t.c.model_name,
    "model_version": t.c.model_version,
    "finding": t.c.finding,
    **{d.value: func.coalesce(t.c[d.value], UNKNOWN) for d in Dimension},
}


class Rate(BaseModel):
    value: float | None = Field(description="None when n is 0")
    n: int

    @classmethod
    def of(cls, hits: int, n: int) -> Rate:
        return cls(value=round(hits / n, 4) if n else None, n=n)


class Agreement(BaseModel):
    pipeline: str
    model: str | None
    model_version: int | None
    finding: str
    site: str | None = Field(default=None, description="set when grouped by site")
    sex: str | None = Field(default=None, description="set when grouped by sex")
    age_band: str | None = Field(default=None, description="set when grouped by age band")
    answers: int
    agree: int
    disagree: int
    not_sure: int
    agreement: Rate
    ppv: Rate = Field(description="among answers on findings the model said present")


@dataclass(frozen=True)
class Breakdown:
    """Which answers (`pipeline` and each dimension's group: None for all) and what
    to group them by besides the model version and finding (`by`)."""

    pipeline: str | None = None
    by: Sequence[Dimension] = ()
    only: Mapping[Dimension, str] = field(default_factory=dict)


def _current() -> Any:
    """Each user's latest answer per report, finding and region."""
    latest = select(func.max(t.c.seq)).group_by(
        t.c.report_id, t.c.actor, t.c.finding, func.coalesce(t.c.region, -1)
    )
    return t.c.seq.in_(latest)


def tally(
    engine: Engine, keys: Sequence[str], breakdown: Breakdown = Breakdown()
) -> list[tuple[Any, ...]]:
    """(*keys, model_present, verdict, count) of the current answers; `keys` name
    columns of _COLUMNS."""
    columns = [_COLUMNS[k] for k in keys]
    query = select(*columns, t.c.model_present, t.c.verdict, func.count()).where(_current())
    if breakdown.pipeline is not None:
        query = query.where(t.c.pipeline == breakdown.pipeline)
    for dimension, group in breakdown.only.items():
        query = query.where(_COLUMNS[dimension.value] == group)
    query = query.group_by(*columns, t.c.model_present, t.c.verdict)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def counts(engine: Engine, pipeline: str | None = None) -> list[tuple[Any, ...]]:
    """(pipeline, model, version, finding, model_present, verdict, count) of the
    current answers."""
    return tally(engine, (*_MODEL_KEYS, "finding"), Breakdown(pipeline))


@dataclass
class Tally:
    """Counts by verdict, overall and where the model said present."""

    verdicts: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)

    def add(self, present: bool | None, verdict: str, count: int) -> None:
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + count
        if present:
            self.present[verdict] = self.present.get(verdict, 0) + count

    def fields(self) -> dict[str, Any]:
        agree, disagree = self.verdicts.get("agree", 0), self.verdicts.get("disagree", 0)
        not_sure = self.verdicts.get("not_sure", 0)
        present_agree = self.present.get("agree", 0)
        return {
            "answers": agree + disagree + not_sure,
            "agree": agree,
            "disagree": disagree,
            "not_sure": not_sure,
            "agreement": Rate.of(agree, agree + disagree),
            "ppv": Rate.of(present_agree, present_agree + self.present.get("disagree", 0)),
        }


def group_tallies(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], Tally]:
    """Rows of `tally` folded per key (all but the last three fields)."""
    groups: dict[tuple[Any, ...], Tally] = {}
    for *key, present, verdict, count in rows:
        groups.setdefault(tuple(key), Tally()).add(present, verdict, count)
    return groups


def agreement(engine: Engine, breakdown: Breakdown | str | None = None) -> list[Agreement]:
    if not isinstance(breakdown, Breakdown):
        breakdown = Breakdown(pipeline=breakdown)
    by = [d.value for d in Dimension if d in breakdown.by]  # a stable order
    keys = (*_MODEL_KEYS, "finding", *by)
    rows = [
        Agreement(**dict(zip(keys, key, strict=True)), **tally_.fields())
        for key, tally_ in group_tallies(tally(engine, keys, breakdown)).items()
    ]
    return sorted(rows, key=lambda a: _order(a, by))


def _order(a: Agreement, by: Sequence[str]) -> tuple[Any, ...]:
    groups = (getattr(a, d) for d in by)
    return (a.pipeline, a.model or "", a.model_version or 0, a.finding, *groups)


def cap_groups(totals: Mapping[str, int], keep: int) -> dict[str, str]:
    """Each group's label: the `keep` groups with most answers keep their name, the
    rest become `other` (bounded label sets on /metrics)."""
    ranked = sorted(totals, key=lambda g: (-totals[g], g))
    return {g: (g if i < keep or g == UNKNOWN else "other") for i, g in enumerate(ranked)}


def by_dimension(engine: Engine, dimension: Dimension) -> Iterator[tuple[Any, ...]]:
    """(pipeline, model, version, group, model_present, verdict, count) per group of
    one dimension, over every finding."""
    yield from tally(engine, (*_MODEL_KEYS, dimension.value))
