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
from aidx.pipelines.labs.alerts import (
    SUSPECT,
    alerting,
    result_alerts,
    review_alert,
    specimen_alert,
)
from aidx.pipelines.labs.anomaly_client import AnomalyClient, AnomalyResult
from aidx.pipelines.labs.assess import assess, censored_bits, not_assessed_reasons
from aidx.pipelines.labs.catalogue import Catalogue, RefState, Sex
from aidx.pipelines.labs.explain import describe_result, describe_specimen
from aidx.pipelines.labs.hub import AlertHub
from aidx.pipelines.labs.normalize import (
    Normalized,
    NormalizedSpecimen,
    is_final,
    normalize_specimen,
)
from aidx.pipelines.labs.reference import AppliedIntervals
from aidx.pipelines.labs.rules import (
    CRITICAL,
    REVIEW,
    PanelBatch,
    RuleEngine,
    RuleOutcome,
)
from aidx.pipelines.labs.store import HistoryRow, LabStore, NewAlert
from aidx.pipelines.labs.types import (
    Anomaly,
    Previous,
    ResultOutcome,
    ResultStatus,
    SpecimenIn,
    SpecimenOutcome,
    Verdict,
)

VERDICTS = (Verdict.release, Verdict.review, Verdict.critical)


def verdict_codes(outcome: RuleOutcome, present: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """[S] 0 release, 1 review, 2 critical. A critical value on a result that a
    specimen-integrity or wrong-blood rule implicates is held for review (recollect),
    not phoned; every other critical value is. A result without an interval for this
    patient (`ref_state`) holds its specimen for review: never a silent release."""
    flags = np.where(present, outcome.flags, 0)
    critical = (flags & int(CRITICAL)) != 0
    suspect = (flags & int(SUSPECT)) != 0
    critical_rows = (critical & ~suspect).any(axis=1)
    review_rows = (
        ((flags & int(REVIEW)) != 0).any(axis=1)
        | (present & (outcome.ref_state != RefState.assessed)).any(axis=1)
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


@dataclass
class _Wave:
    """What the steps found for a wave of specimens, rows in wave order."""

    batch: PanelBatch
    ruled: RuleOutcome
    previous: dict[tuple[int, int], _Prev]
    anomaly: AnomalyResult | None
    decidable: dict[tuple[int, int], bool]  # censored results: (row, column) -> decidable

    def undecidable_rows(self) -> np.ndarray:
        rows = np.zeros(len(self.batch.age_y), dtype=bool)
        for (i, _), ok in self.decidable.items():
            rows[i] |= not ok
        return rows


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
        self.intervals = AppliedIntervals(catalogue)
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
        outside = self.anomaly.outside_population(batch.age_y)
        not_scored = np.array([o is not None for o in outside])
        # the model needs no history: query the store while the model runs
        history, anomaly = await asyncio.gather(
            asyncio.to_thread(self.store.previous, requests, analytes, since),
            self.anomaly.score(
                np.where(not_scored[:, None], np.nan, batch.values),
                priority=priority,
                timeout_s=timeout_s,
            ),
        )
        previous = self._previous(items, history, batch)
        ruled = self.rules.run(batch, anomaly.implicated if anomaly is not None else None)
        wave = _Wave(batch, ruled, previous, anomaly, self._censored(items, ruled))
        present = ~np.isnan(batch.values)
        for i, column in wave.decidable:
            present[i, column] = True
        invalid = np.array([n.invalid for n in items]) | wave.undecidable_rows()
        codes = verdict_codes(ruled, present, invalid)
        unavailable = None if anomaly is not None else self.anomaly.available()
        outcomes, rows, alerts = [], [], []
        for i, item in enumerate(items):
            outcome, new_rows, new_alerts = self._specimen(i, item, wave, VERDICTS[codes[i]])
            if unavailable:
                outcome.warnings.append(f"anomaly model not in service: {unavailable}")
            elif (why := outside[i]) is not None:
                outcome.anomaly_not_assessed = why
                outcome.warnings.append(why.message)
            outcomes.append(outcome)
            rows.extend(new_rows)
            alerts.extend(new_alerts)
        created = await asyncio.to_thread(self.store.save, rows, alerts)
        self.hub.publish(created)
        return outcomes

    def _censored(
        self, items: list[NormalizedSpecimen], ruled: RuleOutcome
    ) -> dict[tuple[int, int], bool]:
        """Rule bits of the censored (`<`/`>`) results into `ruled`; whether each is
        decidable against its limits."""
        t = self.catalogue.tables
        decidable: dict[tuple[int, int], bool] = {}
        for i, item in enumerate(items):
            for column, (comparator, value) in item.censored.items():
                bits, decidable[(i, column)] = censored_bits(
                    comparator,
                    value,
                    self.catalogue.analytes[column],
                    (ruled.ref_low[i, column], ruled.ref_high[i, column]),
                    (t.crit_low[column], t.crit_high[column]),
                )
                ruled.flags[i, column] = bits
        return decidable

    def _batch(self, items: list[NormalizedSpecimen]) -> PanelBatch:
        batch = PanelBatch.empty(len(items), self.catalogue.size)
        for i, item in enumerate(items):
            s = item.specimen
            batch.sex[i] = Sex.parse(s.sex)
            batch.age_y[i] = s.age_y if s.age_y is not None else np.nan
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

    def _result(
        self, i: int, n: Normalized, item: NormalizedSpecimen, wave: _Wave
    ) -> ResultOutcome:
        column = _column(n)
        if column is None:
            outcome = describe_result(n, 0, np.nan, np.nan, None, None)
            assess(outcome, n.analyte, RefState.assessed, True, item.specimen)
            return outcome
        ruled, anomaly = wave.ruled, wave.anomaly
        prev = wave.previous.get((i, column))
        valid_prev = prev is not None and bool(ruled.delta_valid[i, column])
        outcome = describe_result(
            n,
            int(ruled.flags[i, column]),
            ruled.ref_low[i, column],
            ruled.ref_high[i, column],
            _previous(n.analyte.unit if n.analyte else "", prev) if valid_prev else None,
            float(anomaly.contributions[i, column])
            if anomaly is not None and anomaly.scored[i]
            else None,
            self.intervals.get(column, int(ruled.ref_index[i, column])),
        )
        outcome.comparator = n.result.comparator
        state = RefState(int(ruled.ref_state[i, column]))
        assess(outcome, n.analyte, state, wave.decidable.get((i, column), True), item.specimen)
        return outcome

    def _results(
        self, i: int, item: NormalizedSpecimen, wave: _Wave, verdict: Verdict
    ) -> tuple[list[ResultOutcome], list[HistoryRow], list[NewAlert]]:
        s = item.specimen
        usable = not int(wave.ruled.specimen_flags[i]) & int(SUSPECT)
        results, rows, alerts = [], [], []
        for n in item.results:
            outcome = self._result(i, n, item, wave)
            results.append(outcome)
            column = _column(n)
            if column is None or n.analyte is None or n.canonical is None:
                continue
            if is_final(n.result.status) and column in item.columns:  # not a censored one
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
            alerts.extend(result_alerts(s, outcome, int(wave.ruled.flags[i, column]), verdict))
        return results, rows, alerts

    def _specimen(
        self, i: int, item: NormalizedSpecimen, wave: _Wave, verdict: Verdict
    ) -> tuple[SpecimenOutcome, list[HistoryRow], list[NewAlert]]:
        s = item.specimen
        results, rows, alerts = self._results(i, item, wave, verdict)
        anomaly_out = _anomaly_of(wave.anomaly, i)
        found = describe_specimen(
            int(wave.ruled.specimen_flags[i]), results, wave.ruled.wbit_index[i], anomaly_out
        )
        alerts.extend(specimen_alert(s, reason, results, anomaly_out) for reason in found)
        unassessed = not_assessed_reasons(results)
        review = review_alert(s, verdict, unassessed, results, len(alerts))
        if review is not None:
            alerts.append(review)
        outcome = SpecimenOutcome(
            specimen_id=s.specimen_id,
            patient_id=s.patient_id,
            collected_at=s.collected_at,
            verdict=verdict,
            reasons=found
            + [r for res in results for r in res.reasons if alerting(r.rule)]
            + unassessed,
            results=results,
            anomaly=anomaly_out,
            alert_ids=[a.id for a in alerts],
        )
        return outcome, rows, alerts


def _column(n: Normalized) -> int | None:
    """The result's column in the batch; None for a result that was not screened."""
    return n.column if n.status is ResultStatus.screened else None


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


def _previous(unit: str, prev: _Prev | None) -> Previous | None:
    if prev is None:
        return None
    return Previous(
        value=prev.value,
        unit=unit,
        collected_at=datetime.fromtimestamp(prev.collected_at_s, UTC),
        specimen_id=prev.specimen_id,
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
