"""The screening rules: each a small named unit with a stable code, all run in one
vectorised pass over a batch of specimens (rows) x catalogue analytes (columns).

Result rules set bits per result; specimen rules (integrity patterns, wrong blood in
tube, the anomaly model) set a bit on the specimen and on the results they implicate.

Pattern thresholds, with their sources:
- EDTA contamination: high K with low Ca, and low Mg or low ALP (EDTA chelates the
  divalent cations ALP needs). Cornes MP et al., Ann Clin Biochem 2008;45:601-603;
  Lippi G et al., Clin Chem Lab Med 2010. Without Mg and ALP: K high and Ca < 2.0.
- Haemolysis: a haemolysis index above its limit (ICSH/CLSI C56), or, without an
  index, K, LDH and AST all above their reference intervals.
- IV-fluid contamination: most analytes absent from IV fluids diluted (below their
  interval or >= 20 % below the previous result) with glucose > 16.7 mmol/L
  (dextrose) or chloride > 115 mmol/L (saline). Lippi G et al., Clin Chem Lab Med
  2015; Choucair I et al., Clin Chem 2023 (IV fluid contamination patterns).
- Wrong blood in tube: the red-cell indices (MCV, MCH, RDW) barely change in one
  person; sum((delta_i / (sqrt 2 * s_i))^2) over the markers is chi-squared with one
  degree of freedom per marker, fired above its 99.9th percentile. s_i is the
  catalogue's `wbit` (within-person SD). Miller CJ et al., Am J Clin Pathol 2015;
  Rosenbaum MW, Baron JM, Am J Clin Pathol 2018 (multianalyte delta checks).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from aidx.pipelines.labs.catalogue import NO_INTERVAL, Catalogue, RefState, Tables


class Rule(enum.IntFlag):
    critical_high = 1 << 0
    critical_low = 1 << 1
    high = 1 << 2
    low = 1 << 3
    delta = 1 << 4
    edta_contamination = 1 << 5
    haemolysis = 1 << 6
    iv_fluid_contamination = 1 << 7
    wrong_blood_in_tube = 1 << 8
    multivariate_anomaly = 1 << 9


CRITICAL = Rule.critical_high | Rule.critical_low
INTEGRITY = Rule.edta_contamination | Rule.haemolysis | Rule.iv_fluid_contamination
SPECIMEN_RULES = INTEGRITY | Rule.wrong_blood_in_tube | Rule.multivariate_anomaly
# Rules that hold a specimen for review (H and L alone do not: autoverification
# releases abnormal but non-critical results that pass every other check).
REVIEW = Rule.delta | SPECIMEN_RULES
ALERTING = CRITICAL | REVIEW

EDTA_CA_WITHOUT_MG_ALP_MMOL_L = 2.0
IV_GLUCOSE_MMOL_L = 16.7
IV_CHLORIDE_MMOL_L = 115.0
IV_DILUTION_RATIO = 0.8
IV_MIN_MARKERS = 3
IV_MIN_FRACTION = 0.6
IV_MARKERS = (
    "calcium",
    "protein_total",
    "albumin",
    "urea_nitrogen",
    "creatinine",
    "magnesium",
    "phosphate",
    "alp",
    "potassium",
)
WBIT_QUANTILE = 0.999
WBIT_MIN_MARKERS = 2


@dataclass
class PanelBatch:
    """Specimens as rows, catalogue analytes as columns, canonical units; NaN: none."""

    values: np.ndarray  # [S, K] float64
    sex: np.ndarray  # [S] int (catalogue.Sex)
    age_y: np.ndarray  # [S] float, NaN: unknown
    prev_values: np.ndarray  # [S, K] the last valid previous result, NaN when none
    prev_age_h: np.ndarray  # [S, K] hours between it and this specimen

    @classmethod
    def empty(cls, specimens: int, analytes: int) -> PanelBatch:
        nan = np.full((specimens, analytes), np.nan)
        return cls(
            values=nan.copy(),
            sex=np.full(specimens, 2, dtype=np.int64),
            age_y=np.full(specimens, 40.0),
            prev_values=nan.copy(),
            prev_age_h=nan.copy(),
        )


@dataclass
class RuleOutcome:
    flags: np.ndarray  # [S, K] int64 bits of Rule, per result
    specimen_flags: np.ndarray  # [S] int64 bits of Rule
    ref_low: np.ndarray  # [S, K]
    ref_high: np.ndarray  # [S, K]
    ref_state: np.ndarray  # [S, K] int RefState: whether an interval applies, else why
    ref_index: np.ndarray  # [S, K] int: the interval applied (Tables.ref_index), else -1
    delta_valid: np.ndarray  # [S, K] bool: a previous result counts
    wbit_index: np.ndarray  # [S] the chi-squared statistic, NaN without markers


class RuleEngine:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.t = catalogue.tables
        idx = catalogue.index
        self._k = idx.get("potassium")
        self._ca = idx.get("calcium")
        self._mg = idx.get("magnesium")
        self._alp = idx.get("alp")
        self._ldh = idx.get("ldh")
        self._ast = idx.get("ast")
        self._glucose = idx.get("glucose")
        self._chloride = idx.get("chloride")
        self._hil = idx.get("hemolysis_index")
        self._iv = np.array([idx[k] for k in IV_MARKERS if k in idx], dtype=np.int64)
        self._wbit = np.flatnonzero(~np.isnan(self.t.wbit_scale))

    def run(self, batch: PanelBatch, anomaly: np.ndarray | None = None) -> RuleOutcome:
        """`anomaly` [S, K] bool: analytes the model implicates; rows with any are flagged."""
        t = self.t
        v = batch.values
        ref_low, ref_high, ref_state, ref_index = reference_for(t, batch.sex, batch.age_y)
        flags = np.zeros(v.shape, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            flags |= np.where(v > t.crit_high, int(Rule.critical_high), 0)
            flags |= np.where(v < t.crit_low, int(Rule.critical_low), 0)
            flags |= np.where(v > ref_high, int(Rule.high), 0)
            flags |= np.where(v < ref_low, int(Rule.low), 0)
            delta_valid = (
                ~np.isnan(batch.prev_values) & (batch.prev_age_h <= t.validity_h) & ~np.isnan(v)
            )
            change = v - batch.prev_values
            in_window = delta_valid & (batch.prev_age_h <= t.delta_window_h)
            over_abs = np.abs(change) > t.delta_abs
            over_pct = np.abs(change) * 100 > t.delta_percent * np.abs(batch.prev_values)
            flags |= np.where(in_window & (over_abs | over_pct), int(Rule.delta), 0)

        specimen = np.zeros(v.shape[0], dtype=np.int64)
        self._edta(v, ref_low, ref_high, flags, specimen)
        self._haemolysis(v, ref_high, flags, specimen)
        self._iv_fluid(v, ref_low, batch.prev_values, delta_valid, flags, specimen)
        wbit_index = self._wrong_blood(batch, delta_valid, flags, specimen)
        if anomaly is not None:
            rows = anomaly.any(axis=1)
            specimen |= np.where(rows, int(Rule.multivariate_anomaly), 0)
            flags |= np.where(anomaly, int(Rule.multivariate_anomaly), 0)
        return RuleOutcome(
            flags, specimen, ref_low, ref_high, ref_state, ref_index, delta_valid, wbit_index
        )

    @staticmethod
    def _mark(
        rows: np.ndarray, columns: list[int], rule: Rule, flags: np.ndarray, specimen: np.ndarray
    ) -> None:
        specimen |= np.where(rows, int(rule), 0)
        for j in columns:
            flags[:, j] |= np.where(rows, int(rule), 0)

    def _col(self, v: np.ndarray, j: int | None) -> np.ndarray:
        return v[:, j] if j is not None else np.full(v.shape[0], np.nan)

    def _edta(
        self,
        v: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        flags: np.ndarray,
        specimen: np.ndarray,
    ) -> None:
        if self._k is None or self._ca is None:
            return
        k, ca, mg, alp = (self._col(v, j) for j in (self._k, self._ca, self._mg, self._alp))
        with np.errstate(invalid="ignore"):
            mg_low = mg < self._col(lo, self._mg)
            alp_low = alp < self._col(lo, self._alp)
            neither = np.isnan(mg) & np.isnan(alp)
            rows = (
                (k > hi[:, self._k])
                & (ca < lo[:, self._ca])
                & (mg_low | alp_low | (neither & (ca < EDTA_CA_WITHOUT_MG_ALP_MMOL_L)))
            )
        cols = [j for j in (self._k, self._ca, self._mg, self._alp) if j is not None]
        self._mark(rows, cols, Rule.edta_contamination, flags, specimen)

    def _haemolysis(
        self, v: np.ndarray, hi: np.ndarray, flags: np.ndarray, specimen: np.ndarray
    ) -> None:
        if self._k is None:
            return
        hil = self._col(v, self._hil)
        with np.errstate(invalid="ignore"):
            by_index = hil > self._col(hi, self._hil)
            pattern = (
                (v[:, self._k] > hi[:, self._k])
                & (self._col(v, self._ldh) > self._col(hi, self._ldh))
                & (self._col(v, self._ast) > self._col(hi, self._ast))
            )
        rows = by_index | (np.isnan(hil) & pattern)
        cols = [j for j in (self._k, self._ldh, self._ast, self._hil) if j is not None]
        self._mark(rows, cols, Rule.haemolysis, flags, specimen)

    def _iv_fluid(
        self,
        v: np.ndarray,
        lo: np.ndarray,
        prev: np.ndarray,
        delta_valid: np.ndarray,
        flags: np.ndarray,
        specimen: np.ndarray,
    ) -> None:
        if self._iv.size == 0:
            return
        m = v[:, self._iv]
        with np.errstate(invalid="ignore"):
            diluted = (m < lo[:, self._iv]) | (
                delta_valid[:, self._iv] & (m < IV_DILUTION_RATIO * prev[:, self._iv])
            )
            present = (~np.isnan(m)).sum(axis=1)
            fraction = diluted.sum(axis=1) / np.maximum(present, 1)
            fluid = (self._col(v, self._glucose) > IV_GLUCOSE_MMOL_L) | (
                self._col(v, self._chloride) > IV_CHLORIDE_MMOL_L
            )
        rows = (present >= IV_MIN_MARKERS) & (fraction >= IV_MIN_FRACTION) & fluid
        specimen |= np.where(rows, int(Rule.iv_fluid_contamination), 0)
        implicated = np.zeros_like(flags, dtype=bool)
        implicated[:, self._iv] = diluted
        for j in (self._glucose, self._chloride):
            if j is not None:
                implicated[:, j] = True
        flags |= np.where(rows[:, None] & implicated, int(Rule.iv_fluid_contamination), 0)

    def _wrong_blood(
        self,
        batch: PanelBatch,
        delta_valid: np.ndarray,
        flags: np.ndarray,
        specimen: np.ndarray,
    ) -> np.ndarray:
        s = batch.values.shape[0]
        if self._wbit.size == 0:
            return np.full(s, np.nan)
        cols = self._wbit
        scale = np.sqrt(2) * self.t.wbit_scale[cols]
        window = batch.prev_age_h[:, cols] <= self.t.delta_window_h[cols]
        usable = delta_valid[:, cols] & window
        z2 = np.where(
            usable, ((batch.values[:, cols] - batch.prev_values[:, cols]) / scale) ** 2, 0
        )
        n = usable.sum(axis=1)
        stat = np.where(n > 0, z2.sum(axis=1), np.nan)
        limit = chi2.ppf(WBIT_QUANTILE, np.maximum(n, 1))
        with np.errstate(invalid="ignore"):
            rows = (n >= WBIT_MIN_MARKERS) & (stat > limit)
        self._mark(rows, [int(c) for c in cols], Rule.wrong_blood_in_tube, flags, specimen)
        return stat


def reference_for(
    t: Tables, sex: np.ndarray, age_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[S, K] low, high, RefState and the applied interval (`Tables.ref_index`) for
    each patient: NaN bounds and NO_INTERVAL where no interval applies (no band for
    the age and sex, the sex unknown where the sexes differ, the age unknown where the
    interval depends on age)."""
    known_age = ~np.isnan(age_y)
    bands = t.age_band(np.where(known_age, age_y, 0.0))
    low, high, state = t.ref_low[sex, bands], t.ref_high[sex, bands], t.ref_state[sex, bands]
    index = t.ref_index[sex, bands]
    no_age = ~known_age[:, None] & t.age_dependent[None, :]
    state = np.where(no_age, int(RefState.age_unknown), state)
    return (
        np.where(no_age, np.nan, low),
        np.where(no_age, np.nan, high),
        state,
        np.where(no_age, NO_INTERVAL, index),
    )


def rule_names(bits: int) -> list[str]:
    return [r.name for r in Rule if bits & r and r.name is not None]
