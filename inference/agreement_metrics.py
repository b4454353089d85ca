"""The clinicians' current answers counted at each scrape, so that agreement is
computed in PromQL with its n: agree / (agree + disagree) per model version and
finding (`aidx_feedback_answers`), and per site, sex or age band, one dimension at a
time (`aidx_feedback_group_answers`). Label sets stay bounded: findings come from
the model cards, sex and age band are a few coarse groups, and only the sites with
most answers keep their name (the rest are `other`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from aidx.inference.agreement import by_dimension, cap_groups, counts
from aidx.inference.cohort import Dimension

MAX_SITES = 20  # sites named on /metrics; the others are summed as `other`


def _said(present: bool | None) -> str:
    return "none" if present is None else str(bool(present)).lower()


class FeedbackCollector(Collector):
    def __init__(self, engine: Engine, max_sites: int = MAX_SITES) -> None:
        self.engine = engine
        self.max_sites = max_sites

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        answers = GaugeMetricFamily(
            "aidx_feedback_answers",
            "Clinicians' current answers by model version, finding, what the model said "
            "(present: true, false, none) and verdict",
            labels=["pipeline", "model", "version", "finding", "present", "verdict"],
        )
        groups = GaugeMetricFamily(
            "aidx_feedback_group_answers",
            "Clinicians' current answers by model version and one subgroup dimension "
            "(site, sex, age_band), what the model said and verdict",
            labels=["pipeline", "model", "version", "dimension", "group", "present", "verdict"],
        )
        return answers, groups

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()  # so registering does not query a store not yet migrated

    def collect(self) -> Iterator[GaugeMetricFamily]:
        answers, groups = self._families()
        for pipeline, model, version, finding, present, verdict, count in counts(self.engine):
            labels = [pipeline, model or "", str(version or ""), finding]
            answers.add_metric([*labels, _said(present), verdict], float(count))
        for dimension in Dimension:
            self._add_groups(groups, dimension)
        yield answers
        yield groups

    def _add_groups(self, family: GaugeMetricFamily, dimension: Dimension) -> None:
        rows = list(by_dimension(self.engine, dimension))
        totals: dict[str, int] = {}
        for *_, group, _present, _verdict, count in rows:
            totals[group] = totals.get(group, 0) + count
        names = cap_groups(totals, self.max_sites) if dimension is Dimension.site else {}
        summed: dict[tuple[str, ...], float] = {}
        for pipeline, model, version, group, present, verdict, count in rows:
            key: tuple[str, ...] = (pipeline, model or "", str(version or ""), dimension.value,
                   names.get(group, group), _said(present), verdict)  # fmt: skip
            summed[key] = summed.get(key, 0.0) + count
        for key, value in summed.items():
            family.add_metric(list(key), value)
