"""The lab screening pipeline, wired in one place:

    normalize -> history (store) -> anomaly model (batcher) -> rules -> verdicts
    -> outcomes, history rows and alerts -> store -> live feed

Specimens of one patient in one request are screened in collection order, each
against the ones before it (waves), so a delta inside one message is seen too.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from aidx.inference.serving import ModelService
from aidx.pipelines.labs.anomaly_client import AnomalyClient, AnomalyResult
from aidx.pipelines.labs.catalogue import Catalogue, Sex
from aidx.pipelines.labs.explain import describe_result, describe_specimen
from aidx.pipelines.labs.hub import AlertHub
from aidx.pipelines.labs.normalize import (
    Normalized,
    NormalizedSpecimen,
    is_final,
    normalize_specimen,
)
from aidx.pipelines.labs.rules import (
    CRITICAL,
    INTEGRITY,
    REVIEW,
    PanelBatch,
    Rule,
    RuleEngine,
    RuleOutcome,
)
from aidx.pipelines.labs.store import HistoryRow, LabStore, NewAlert
from aidx.pipelines.labs.types import (
    Anomaly,
    Previous,
    Reason,
    ResultOutcome,
    ResultStatus,
    SpecimenIn,
    SpecimenOutcome,
    Verdict,
)

VERDICTS = (Verdict.release, Verdict.review, Verdict.critical)
SUSPECT = INTEGRITY | Rule.wrong_blood_in_tube
DEFAULT_AGE_Y = 40.0


def verdict_codes(outcome: RuleOutcome, present: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """[S] 0 release, 1 review, 2 critical. A critical value on a result that a
    specimen-integrity or wrong-blood rule implicates is held for review (recollect),
    not phoned; every other critical value is."""
    flags = np.where(present, outcome.flags, 0)
    critical = (flags & int(CRITICAL)) != 0
    suspect = (flags & int(SUSPECT)) != 0
    critical_rows = (critical & ~suspect).any(axis=1)
    review_rows = (
        ((flags & int(REVIEW)) != 0).any(axis=1)
        | ((outcome.specimen_flags & int(REVIEW)) != 0)
        | invalid
        | (critical & suspect).any(axis=1)
    )
    return np.where(critical_rows, 2, np.where(review_rows, 1, 0))


@dataclass
class _Prev:
    value: float
    collected_at_s: float
    specimen_id: str


class LabScreener:
    """The labs pipeline: a sequence of specimens in, their screened outcomes out
    (rules, delta checks, the anomaly model), stored and alerted as they are screened."""

    name = "labs"

    def __init__(
        self,
        catalogue: Catalogue,
        store: LabStore,
        models: ModelService | None,
        hub: AlertHub | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.rules = RuleEngine(catalogue)
        self.anomaly = AnomalyClient(models, catalogue)
        self.hub = hub or AlertHub()
        self._max_validity_s = float(np.nanmax(catalogue.tables.validity_h)) * 3600

    async def analyze(
        self,
        specimens: Sequence[SpecimenIn],
        *,
        priority: int | None = None,
        timeout_s: float | None = None,
    ) -> list[SpecimenOutcome]:
        normalized = [normalize_specimen(self.catalogue, s) for s in specimens]
        outcomes: list[SpecimenOutcome | None] = [None] * len(specimens)
        for wave in _waves(specimens):
            items = [normalized[i] for i in wave]
            done = await self._screen_wave(items, priority, timeout_s)
            for i, outcome in zip(wave, done, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _screen_wave(
        self, items: list[NormalizedSpecimen], priority: int | None, timeout_s: float | None
    ) -> list[SpecimenOutcome]:
        requests = [
            (n.specimen.patient_id, n.specimen.specimen_id, n.specimen.collected_at.timestamp())
            for n in items
        ]
        analytes = sorted({self.catalogue.analytes[c].key for n in items for c in n.columns})
        since = min(t for _, _, t in requests) - self._max_validity_s
        batch = self._batch(items)
        # the model needs no history: query the store while the model runs
        history, anomaly = await asyncio.gather(
            asyncio.to_thread(self.store.previous, requests, analytes, since),
            self.anomaly.score(batch.values, priority=priority, timeout_s=timeout_s),
        )
        previous = self._previous(items, history, batch)
        ruled = self.rules.run(batch, anomaly.implicated if anomaly is not None else None)
        present = ~np.isnan(batch.values)
        invalid = np.array([n.invalid for n in items])
        codes = verdict_codes(ruled, present, invalid)
        unavailable = None if anomaly is not None else self.anomaly.available()
        outcomes, rows, alerts = [], [], []
        for i, item in enumerate(items):
            outcome, new_rows, new_alerts = self._specimen(
                i, item, batch, ruled, previous, anomaly, VERDICTS[codes[i]]
            )
            if unavailable:
                outcome.warnings.append(f"anomaly model not in service: {unavailable}")
            outcomes.append(outcome)
            rows.extend(new_rows)
            alerts.extend(new_alerts)
        created = await asyncio.to_thread(self.store.save, rows, alerts)
        self.hub.publish(created)
        return outcomes

    def _batch(self, items: list[NormalizedSpecimen]) -> PanelBatch:
        batch = PanelBatch.empty(len(items), self.catalogue.size)
        for i, item in enumerate(items):
            s = item.specimen
            batch.sex[i] = Sex.parse(s.sex)
            batch.age_y[i] = s.age_y if s.age_y is not None else DEFAULT_AGE_Y
            for column, value in item.columns.items():
                batch.values[i, column] = value
        return batch

    def _previous(
        self, items: list[NormalizedSpecimen], history: list[HistoryRow], batch: PanelBatch
    ) -> dict[tuple[int, int], _Prev]:
        """Fill the batch's previous results; returns them by (row, column)."""
        by_key = {(row.patient_id, row.analyte): row for row in history}
        previous: dict[tuple[int, int], _Prev] = {}
        for i, item in enumerate(items):
            s = item.specimen
            t = s.collected_at.timestamp()
            for column in item.columns:
                last = by_key.get((s.patient_id, self.catalogue.analytes[column].key))
                if last is not None:
                    batch.prev_values[i, column] = last.value
                    batch.prev_age_h[i, column] = (t - last.collected_at_s) / 3600
                    previous[(i, column)] = _Prev(last.value, last.collected_at_s, last.specimen_id)
        return previous

    def _specimen(
        self,
        i: int,
        item: NormalizedSpecimen,
        batch: PanelBatch,
        ruled: RuleOutcome,
        previous: dict[tuple[int, int], _Prev],
        anomaly: AnomalyResult | None,
        verdict: Verdict,
    ) -> tuple[SpecimenOutcome, list[HistoryRow], list[NewAlert]]:
        s = item.specimen
        specimen_bits = int(ruled.specimen_flags[i])
        results, rows, alerts = [], [], []
        usable = not specimen_bits & int(SUSPECT)
        for n in item.results:
            outcome, bits = _result_outcome(i, n, ruled, previous, anomaly)
            results.append(outcome)
            if _column(n) is not None and n.analyte is not None and n.canonical is not None:
                if is_final(n.result.status):
                    rows.append(
                        HistoryRow(
                            s.patient_id,
                            n.analyte.key,
                            s.specimen_id,
                            n.canonical,
                            s.collected_at.timestamp(),
                            usable,
                        )
                    )
                alerts.extend(_result_alerts(s, outcome, bits, verdict))
        anomaly_out = _anomaly_of(anomaly, i)
        reasons = describe_specimen(specimen_bits, results, ruled.wbit_index[i], anomaly_out)
        for reason in reasons:
            alerts.append(_specimen_alert(s, reason, results, anomaly_out))
        outcome = SpecimenOutcome(
            specimen_id=s.specimen_id,
            patient_id=s.patient_id,
            collected_at=s.collected_at,
            verdict=verdict,
            reasons=reasons + [r for res in results for r in res.reasons if _alerting(r.rule)],
            results=results,
            anomaly=anomaly_out,
            alert_ids=[a.id for a in alerts],
        )
        if s.age_y is None:
            outcome.warnings.append(f"age unknown: intervals for age {DEFAULT_AGE_Y:g} used")
        return outcome, rows, alerts


def _column(n: Normalized) -> int | None:
    """The result's column in the batch; None for a result that was not screened."""
    return n.column if n.status is ResultStatus.screened else None


def _result_outcome(
    i: int,
    n: Normalized,
    ruled: RuleOutcome,
    previous: dict[tuple[int, int], _Prev],
    anomaly: AnomalyResult | None,
) -> tuple[ResultOutcome, int]:
    """Result `n` of batch row `i` described, and its rule bits."""
    column = _column(n)
    prev = previous.get((i, column)) if column is not None else None
    valid_prev = prev is not None and column is not None and bool(ruled.delta_valid[i, column])
    bits = int(ruled.flags[i, column]) if column is not None else 0
    outcome = describe_result(
        n,
        bits,
        ruled.ref_low[i, column] if column is not None else np.nan,
        ruled.ref_high[i, column] if column is not None else np.nan,
        _previous(n.analyte.unit if n.analyte else "", prev) if valid_prev else None,
        float(anomaly.contributions[i, column])
        if anomaly is not None and column is not None and anomaly.scored[i]
        else None,
    )
    return outcome, bits


def _anomaly_of(anomaly: AnomalyResult | None, i: int) -> Anomaly | None:
    """Batch row `i`'s anomaly score, if the model scored it."""
    if anomaly is None or not anomaly.scored[i]:
        return None
    return Anomaly(
        score=anomaly.score(i),
        probability=float(1.0 - anomaly.p[i]),
        threshold=float(1.0 - anomaly.p_threshold),
        present=bool(anomaly.alarm[i]),
        analytes_used=int(anomaly.analytes_used[i]),
        model=anomaly.model,
    )


def _alerting(rule: str) -> bool:
    return rule in {"critical_high", "critical_low", "delta"}


def _previous(unit: str, prev: _Prev | None) -> Previous | None:
    if prev is None:
        return None
    return Previous(
        value=prev.value,
        unit=unit,
        collected_at=datetime.fromtimestamp(prev.collected_at_s, UTC),
        specimen_id=prev.specimen_id,
    )


def _evidence_value(outcome: ResultOutcome) -> dict[str, object]:
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
            "previous",
            "anomaly_contribution",
            "observation_id",
        },
    )


def _result_alerts(
    s: SpecimenIn, outcome: ResultOutcome, bits: int, verdict: Verdict
) -> list[NewAlert]:
    alerts = []
    for reason in outcome.reasons:
        if not _alerting(reason.rule):
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
                    "verdict": verdict.value,
                    "values": [_evidence_value(outcome)],
                },
                source_id=s.source_id,
            )
        )
    return alerts


def _specimen_alert(
    s: SpecimenIn, reason: Reason, results: list[ResultOutcome], anomaly: Anomaly | None
) -> NewAlert:
    involved = [_evidence_value(r) for r in results if reason.rule in r.flags]
    evidence: dict[str, object] = {
        "rule": reason.rule,
        "collected_at": s.collected_at.isoformat(),
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


def _waves(specimens: Sequence[SpecimenIn]) -> list[list[int]]:
    """Indices in waves: the n-th specimen (by collection time) of a patient goes to
    wave n, so each wave sees the ones before it in the store."""
    order = sorted(range(len(specimens)), key=lambda i: specimens[i].collected_at)
    seen: dict[str, int] = defaultdict(int)
    waves: list[list[int]] = []
    for i in order:
        n = seen[specimens[i].patient_id]
        seen[specimens[i].patient_id] += 1
        if n == len(waves):
            waves.append([])
        waves[n].append(i)
    return waves
