"""Shadow comparisons kept in the store, added up in SQL, and shown on /metrics.

One row per served batch the shadow also ran (its items and both versions' compute
time) and one per label compared (inference/shadow_compare.py). Summaries add the
rows up per (serving version, shadow version): every rate comes with its counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, insert, select

from aidx.inference.schema import shadow_batches, shadow_labels
from aidx.inference.shadow_compare import LabelTally

_TALLY_COLUMNS = tuple(LabelTally.__dataclass_fields__)


@dataclass(frozen=True)
class ShadowBatch:
    """One served batch that the shadow version ran too."""

    model: str
    serving_version: int
    shadow_version: int
    items: int
    serving_s: float
    shadow_s: float
    labels: Mapping[str, LabelTally]


@dataclass
class PairSummary:
    """A (serving, shadow) pair of versions, over every batch stored for it."""

    serving_version: int
    shadow_version: int
    batches: int = 0
    items: int = 0
    serving_s: float = 0.0  # compute time, all batches together
    shadow_s: float = 0.0
    labels: dict[str, LabelTally] = field(default_factory=dict)

    def overall(self) -> LabelTally:
        total = LabelTally()
        for label in self.labels.values():
            total.add(label)
        return total

    def as_dict(self) -> dict[str, object]:
        overall = self.overall()
        return {
            "serving_version": self.serving_version,
            "shadow_version": self.shadow_version,
            "batches": self.batches,
            "items": self.items,
            "agreement": _rate(overall.agree, overall.decided),
            "labels": {name: _label_dict(t) for name, t in self.labels.items()},
            "latency": {
                "batches": self.batches,
                "serving_mean_batch_s": _mean(self.serving_s, self.batches),
                "shadow_mean_batch_s": _mean(self.shadow_s, self.batches),
                "serving_s_total": round(self.serving_s, 6),
                "shadow_s_total": round(self.shadow_s, 6),
            },
        }


def _mean(total: float, n: int) -> float | None:
    return round(total / n, 6) if n else None


def _rate(count: int, n: int) -> dict[str, object]:
    return {"rate": round(count / n, 4) if n else None, "count": count, "n": n}


def _label_dict(t: LabelTally) -> dict[str, object]:
    r = t.correlation
    return {
        "agreement": _rate(t.agree, t.decided),
        "both_present": t.both_present,
        "serving_only": t.serving_only,
        "shadow_only": t.shadow_only,
        "score_correlation": {"r": None if r is None else round(r, 4), "n": t.n},
    }


class ShadowStore:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def add(self, batch: ShadowBatch, at_s: float | None = None) -> None:
        with self.db.begin() as conn:
            added = conn.execute(
                insert(shadow_batches).values(
                    model_name=batch.model,
                    serving_version=batch.serving_version,
                    shadow_version=batch.shadow_version,
                    items=batch.items,
                    serving_s=batch.serving_s,
                    shadow_s=batch.shadow_s,
                    compared_at_s=time.time() if at_s is None else at_s,
                )
            )
            seq = added.inserted_primary_key[0] if added.inserted_primary_key else None
            rows = [
                {"batch_seq": seq, "label": name, **tally.as_dict()}
                for name, tally in batch.labels.items()
            ]
            if rows:
                conn.execute(insert(shadow_labels), rows)

    def summaries(self, model: str | None = None) -> dict[str, list[PairSummary]]:
        """Model -> its version pairs, each added up over every stored batch."""
        pairs = self._pairs(model)
        b, lab = shadow_batches.c, shadow_labels.c
        query = (
            select(
                b.model_name,
                b.serving_version,
                b.shadow_version,
                lab.label,
                *(func.sum(lab[c]) for c in _TALLY_COLUMNS),
            )  # fmt: skip
            .join(shadow_labels, lab.batch_seq == b.seq)
            .group_by(b.model_name, b.serving_version, b.shadow_version, lab.label)
        )
        if model is not None:
            query = query.where(b.model_name == model)
        with self.db.connect() as conn:
            for name, serving, shadow, label, *sums in conn.execute(query):
                tally = LabelTally(**dict(zip(_TALLY_COLUMNS, sums, strict=True)))
                pairs[(name, serving, shadow)].labels[label] = tally
        result: dict[str, list[PairSummary]] = {}
        for (name, _, _), summary in sorted(pairs.items()):
            result.setdefault(name, []).append(summary)
        return result

    def _pairs(self, model: str | None) -> dict[tuple[str, int, int], PairSummary]:
        b = shadow_batches.c
        query = select(
            b.model_name, b.serving_version, b.shadow_version,
            func.count(), func.sum(b["items"]), func.sum(b.serving_s), func.sum(b.shadow_s),
        ).group_by(b.model_name, b.serving_version, b.shadow_version)  # fmt: skip
        if model is not None:
            query = query.where(b.model_name == model)
        with self.db.connect() as conn:
            return {
                (name, serving, shadow): PairSummary(
                    serving, shadow, int(n), int(items), float(s_s), float(t_s)
                )
                for name, serving, shadow, n, items, s_s, t_s in conn.execute(query)
            }


class ShadowCollector(Collector):
    """Agreement and score correlation of every shadow pair, read from the store at
    each scrape, each beside the count it rests on."""

    def __init__(self, store: ShadowStore) -> None:
        self.store = store

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        pair = ["model", "serving", "shadow"]
        return (
            GaugeMetricFamily("aidx_shadow_agreement",
                              "Share of present/absent calls the shadow version agrees on",
                              labels=pair),
            GaugeMetricFamily("aidx_shadow_decisions",
                              "Present/absent calls compared (the agreement's n)", labels=pair),
            GaugeMetricFamily("aidx_shadow_score_correlation",
                              "Pearson's r of serving and shadow scores, per label",
                              labels=[*pair, "label"]),
            GaugeMetricFamily("aidx_shadow_score_pairs",
                              "Score pairs behind the correlation, per label",
                              labels=[*pair, "label"]),
        )  # fmt: skip

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()  # no store query before it is migrated

    def collect(self) -> Iterator[GaugeMetricFamily]:
        agreement, decisions, correlation, pairs = self._families()
        for model, summaries in self.store.summaries().items():
            for s in summaries:
                key = [model, str(s.serving_version), str(s.shadow_version)]
                overall = s.overall()
                decisions.add_metric(key, overall.decided)
                if overall.agreement is not None:
                    agreement.add_metric(key, overall.agreement)
                for label, tally in s.labels.items():
                    pairs.add_metric([*key, label], tally.n)
                    if tally.correlation is not None:
                        correlation.add_metric([*key, label], tally.correlation)
        yield from (agreement, decisions, correlation, pairs)
