"""Agreement between the models and the clinicians, from each user's current answer
per finding (inference/feedback.py): per pipeline, model version and finding, the
counts by verdict, the agreement rate and the estimated PPV, each with the count
it rests on (no rate without its n).

agreement rate = agree / (agree + disagree)            n = agree + disagree
estimated PPV  = agree / decided, where the model said present   n = those decided
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from sqlalchemy import Engine, func, select

from aidx.inference.schema import report_feedback

t = report_feedback


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
    answers: int
    agree: int
    disagree: int
    not_sure: int
    agreement: Rate
    ppv: Rate = Field(description="among answers on findings the model said present")


def _current() -> Any:
    """Each user's latest answer per report, finding and region."""
    latest = select(func.max(t.c.seq)).group_by(
        t.c.report_id, t.c.actor, t.c.finding, func.coalesce(t.c.region, -1)
    )
    return t.c.seq.in_(latest)


def counts(engine: Engine, pipeline: str | None = None) -> list[tuple[Any, ...]]:
    """(pipeline, model, version, finding, model_present, verdict, count) of the
    current answers."""
    keys = (t.c.pipeline, t.c.model_name, t.c.model_version, t.c.finding)
    query = select(*keys, t.c.model_present, t.c.verdict, func.count()).where(_current())
    if pipeline is not None:
        query = query.where(t.c.pipeline == pipeline)
    query = query.group_by(*keys, t.c.model_present, t.c.verdict)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def agreement(engine: Engine, pipeline: str | None = None) -> list[Agreement]:
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    for *key, present, verdict, count in counts(engine, pipeline):
        tally = groups.setdefault(tuple(key), {})
        tally[verdict] = tally.get(verdict, 0) + count
        if present:
            tally[f"present_{verdict}"] = tally.get(f"present_{verdict}", 0) + count
    return sorted(_rows(groups), key=lambda a: (a.pipeline, a.model or "", a.finding))


def _rows(groups: dict[tuple[Any, ...], dict[str, int]]) -> Iterator[Agreement]:
    for (pipeline, model, version, finding), tally in groups.items():
        agree, disagree = tally.get("agree", 0), tally.get("disagree", 0)
        present_agree = tally.get("present_agree", 0)
        present_decided = present_agree + tally.get("present_disagree", 0)
        yield Agreement(
            pipeline=pipeline,
            model=model,
            model_version=version,
            finding=finding,
            answers=agree + disagree + tally.get("not_sure", 0),
            agree=agree,
            disagree=disagree,
            not_sure=tally.get("not_sure", 0),
            agreement=Rate.of(agree, agree + disagree),
            ppv=Rate.of(present_agree, present_decided),
        )


class FeedbackCollector(Collector):
    """The current answers counted at each scrape, so that agreement is computed in
    PromQL with its n: agree / (agree + disagree) per model version and finding."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "aidx_feedback_answers",
            "Clinicians' current answers by model version, finding, what the model said "
            "(present: true, false, none) and verdict",
            labels=["pipeline", "model", "version", "finding", "present", "verdict"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()  # so registering does not query a store not yet migrated

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for pipeline, model, version, finding, present, verdict, count in counts(self.engine):
            said = "none" if present is None else str(bool(present)).lower()
            labels = [pipeline, model or "", str(version or ""), finding, said, verdict]
            family.add_metric(labels, float(count))
        yield family
