"""Batch mode: screen a long table of results (a LIS extract) in one vectorised pass,
through the same catalogue, rules and model (via the batcher) as the live path.

The table holds one row per result: specimen index, LOINC code, value, UCUM unit,
and, when known, the patient's previous result for that analyte (canonical) and its
age in hours. Nothing is written to the store; the answer is arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aidx.pipelines.labs.anomaly_client import AnomalyClient
from aidx.pipelines.labs.catalogue import Catalogue
from aidx.pipelines.labs.rules import PanelBatch, RuleEngine
from aidx.pipelines.labs.screening import verdict_codes

# result status codes in BatchOutcome.status
SCREENED, UNKNOWN_CODE, UNIT_NOT_CONVERTIBLE, IMPOSSIBLE_VALUE, NOT_NUMERIC = range(5)


@dataclass
class ResultTable:
    specimen: np.ndarray  # [R] int, 0..S-1
    code: np.ndarray  # [R] str
    value: np.ndarray  # [R] float (NaN: not numeric)
    unit: np.ndarray  # [R] str
    prev_value: np.ndarray  # [R] float canonical, NaN: none
    prev_age_h: np.ndarray  # [R] float
    sex: np.ndarray  # [S] int (catalogue.Sex)
    age_y: np.ndarray  # [S] float


@dataclass
class BatchOutcome:
    status: np.ndarray  # [R] int, see the codes above
    canonical: np.ndarray  # [R] float
    flags: np.ndarray  # [R] int, bits of rules.Rule
    verdict: np.ndarray  # [S] 0 release, 1 review, 2 critical
    specimen_flags: np.ndarray  # [S] bits of rules.Rule
    anomaly_p: np.ndarray  # [S] tail probability (1.0 when not scored)


class BatchScreener:
    def __init__(self, catalogue: Catalogue, anomaly: AnomalyClient) -> None:
        self.catalogue = catalogue
        self.rules = RuleEngine(catalogue)
        self.anomaly = anomaly

    def _conversions(
        self, code: np.ndarray, unit: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per result: column (-1 unknown), factor, offset (NaN: not convertible)."""
        pairs, inverse = np.unique(
            np.char.add(np.char.add(code, "\x1f"), unit), return_inverse=True
        )
        columns = np.full(len(pairs), -1)
        factors = np.full(len(pairs), np.nan)
        offsets = np.zeros(len(pairs))
        for i, pair in enumerate(pairs):
            c, u = str(pair).split("\x1f")
            analyte = self.catalogue.by_code.get(c)
            if analyte is None:
                continue
            columns[i] = self.catalogue.index[analyte.key]
            if u == analyte.unit:
                factors[i] = 1.0
            elif (conversion := analyte.units.get(u)) is not None:
                factor, offset = conversion if isinstance(conversion, tuple) else (conversion, 0)
                factors[i], offsets[i] = factor, offset
        return columns[inverse], factors[inverse], offsets[inverse], inverse

    async def screen(self, table: ResultTable, *, priority: int | None = None) -> BatchOutcome:
        t = self.catalogue.tables
        s = len(table.sex)
        column, factor, offset, _ = self._conversions(table.code, table.unit)
        canonical = table.value * factor + offset
        safe = np.maximum(column, 0)
        with np.errstate(invalid="ignore"):
            possible = (canonical >= t.plausible_low[safe]) & (canonical <= t.plausible_high[safe])
        status = np.select(
            [column < 0, np.isnan(table.value), np.isnan(factor), ~possible],
            [UNKNOWN_CODE, NOT_NUMERIC, UNIT_NOT_CONVERTIBLE, IMPOSSIBLE_VALUE],
            SCREENED,
        )
        ok = status == SCREENED
        batch = PanelBatch.empty(s, self.catalogue.size)
        batch.sex, batch.age_y = table.sex, table.age_y
        rows, cols = table.specimen[ok], column[ok]
        batch.values[rows, cols] = canonical[ok]
        batch.prev_values[rows, cols] = table.prev_value[ok]
        batch.prev_age_h[rows, cols] = table.prev_age_h[ok]
        anomaly = await self.anomaly.score(batch.values, priority=priority)
        ruled = self.rules.run(batch, anomaly.implicated if anomaly is not None else None)
        invalid = np.zeros(s, dtype=bool)
        invalid[table.specimen[~ok]] = True
        verdict = verdict_codes(ruled, ~np.isnan(batch.values), invalid)
        flags = np.zeros(len(status), dtype=np.int64)
        flags[ok] = ruled.flags[rows, cols]
        return BatchOutcome(
            status=status,
            canonical=canonical,
            flags=flags,
            verdict=verdict,
            specimen_flags=ruled.specimen_flags,
            anomaly_p=anomaly.p if anomaly is not None else np.ones(s),
        )
