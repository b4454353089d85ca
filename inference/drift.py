"""Drift: how far what a model sees and says has moved from its reference.

An observation is one analysed input's features: numbers (the model input's intensity
summary, pixel spacing, kVp, the OOD score, each finding's score) and categories
(manufacturer, station name, each finding present or not). The reference is the same
features over the model's held-out data, stored beside the model (`<version>/drift.json`,
its sha256 in the card's `files`).

Per feature, a window of recent observations is compared with the reference by the
population stability index (PSI, binned on the reference's deciles; categories are
their own bins) and a two-sample test: Kolmogorov-Smirnov for numbers, chi-square
for categories. A feature drifts when its window holds enough observations, its PSI
reaches the alert level and the test rejects "same distribution" at the alert p-value.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats

from aidx.inference.reports import Report
from aidx.inference.settings_sections import DriftSettings

Value = float | int | str | bool | None
Observation = Mapping[str, Value]

REFERENCE_FILE = "drift.json"
DECILES = np.linspace(0.1, 0.9, 9)
MAX_SAMPLE = 1000  # the reference values kept for the KS test (order statistics past it)
MIN_REFERENCE = 20  # a feature with fewer reference values is not monitored
PSEUDO_COUNT = 0.5  # added to every bin on both sides: an empty bin is not infinite PSI


class Test(enum.StrEnum):
    ks = "ks"  # two-sample Kolmogorov-Smirnov
    chi2 = "chi2"  # chi-square on the 2 x k table of category counts


class NumericReference(BaseModel):
    kind: Literal["numeric"] = "numeric"
    n: int
    edges: list[float] = Field(description="interior bin edges: the reference's deciles")
    sample: list[float] = Field(description="the reference's values, sorted (for the KS test)")


class CategoricalReference(BaseModel):
    kind: Literal["categorical"] = "categorical"
    n: int
    counts: dict[str, int]


FeatureReference = Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]


class DriftReference(BaseModel):
    """The features' distributions over a model's reference data."""

    model: str
    version: int
    dataset: str = Field(description="what the reference was computed from")
    n: int = Field(description="observations in the reference")
    features: dict[str, FeatureReference]

    @classmethod
    def fit(
        cls, observations: Sequence[Observation], *, model: str, version: int, dataset: str
    ) -> DriftReference:
        names = sorted({name for o in observations for name in o})
        features: dict[str, FeatureReference] = {}
        for name in names:
            found = _reference(values_of(observations, name))
            if found is not None:
                features[name] = found
        return cls(model=model, version=version, dataset=dataset, n=len(observations),
                   features=features)  # fmt: skip

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=1) + "\n").encode()

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))


def values_of(observations: Iterable[Observation], name: str) -> list[Value]:
    return [o[name] for o in observations if o.get(name) is not None]


def _numeric(values: Sequence[Value]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _category(value: Value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _significant(x: float) -> float:
    return float(f"{x:.6g}")


def _reference(values: Sequence[Value]) -> FeatureReference | None:
    if len(values) < MIN_REFERENCE:
        return None
    if not _numeric(values):
        categories: dict[str, int] = {}
        for value in values:
            categories[_category(value)] = categories.get(_category(value), 0) + 1
        return CategoricalReference(n=len(values), counts=categories)
    data = np.sort(np.asarray(values, dtype=np.float64))
    edges = np.unique(np.quantile(data, DECILES))
    if len(data) > MAX_SAMPLE:
        data = np.quantile(data, np.linspace(0, 1, MAX_SAMPLE))
    return NumericReference(
        n=len(values),
        edges=[_significant(e) for e in edges],
        sample=[_significant(v) for v in data],
    )


# --- the comparison -----------------------------------------------------------


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), with a and e
    the actual and expected shares (each bin given PSEUDO_COUNT on both sides)."""
    e = np.asarray(expected_counts, dtype=np.float64) + PSEUDO_COUNT
    a = np.asarray(actual_counts, dtype=np.float64) + PSEUDO_COUNT
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts in the len(edges) + 1 bins (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1)


class FeatureDrift(BaseModel):
    feature: str
    kind: Literal["numeric", "categorical"]
    test: Test
    window_n: int = Field(description="observations of the feature in the window")
    reference_n: int
    psi: float | None = Field(description="None when the window holds none")
    p_value: float | None
    drifting: bool


def _numeric_drift(ref: NumericReference, values: Sequence[Value]) -> tuple[float, float]:
    window = np.asarray(values, dtype=np.float64)
    sample = np.asarray(ref.sample, dtype=np.float64)
    index = psi(bin_counts(sample, ref.edges), bin_counts(window, ref.edges))
    return index, float(stats.ks_2samp(sample, window).pvalue)


def _categorical_drift(ref: CategoricalReference, values: Sequence[Value]) -> tuple[float, float]:
    seen: dict[str, int] = {}
    for value in values:
        seen[_category(value)] = seen.get(_category(value), 0) + 1
    categories = sorted(set(ref.counts) | set(seen))
    expected = np.array([ref.counts.get(c, 0) for c in categories])
    actual = np.array([seen.get(c, 0) for c in categories])
    index = psi(expected, actual)
    if len(categories) < 2:  # one category on both sides: nothing differs
        return index, 1.0
    p_value = stats.chi2_contingency(np.stack([expected, actual])).pvalue
    return index, float(p_value)


def compare_feature(
    name: str, ref: FeatureReference, values: Sequence[Value], limits: DriftSettings
) -> FeatureDrift:
    """One feature of a window (its non-missing values) against its reference."""
    numeric = isinstance(ref, NumericReference)
    if numeric:  # a text where a number belongs is not an observation of the number
        values = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    index: float | None = None
    p_value: float | None = None
    if values:
        if isinstance(ref, NumericReference):
            index, p_value = _numeric_drift(ref, values)
        else:
            index, p_value = _categorical_drift(ref, values)
    drifting = (
        index is not None
        and p_value is not None
        and len(values) >= limits.min_window
        and index >= limits.psi_alert
        and p_value < limits.p_alert
    )
    return FeatureDrift(
        feature=name,
        kind=ref.kind,
        test=Test.ks if numeric else Test.chi2,
        window_n=len(values),
        reference_n=ref.n,
        psi=None if index is None else round(index, 4),
        p_value=None if p_value is None else _p(p_value),
        drifting=drifting,
    )


def _p(p_value: float) -> float:
    return float(f"{p_value:.4g}") if math.isfinite(p_value) else 1.0


def compare(
    reference: DriftReference, window: Sequence[Observation], limits: DriftSettings
) -> list[FeatureDrift]:
    """Every reference feature in `window`, by name."""
    return [
        compare_feature(name, ref, values_of(window, name), limits)
        for name, ref in sorted(reference.features.items())
    ]


# --- what every report says ------------------------------------------------------


def report_features(report: Report) -> dict[str, Value]:
    """What the model said, from any report: its OOD score (when it has a gate), and
    per assessed finding its score and present or not (the positive rate)."""
    said: dict[str, Value] = {}
    if report.ood is not None and report.ood.score is not None:
        said["ood_score"] = report.ood.score
    for finding in report.findings:
        if finding.probability is None or finding.present is None:
            continue
        said[f"score.{finding.concept.meaning}"] = round(finding.probability, 6)
        said[f"positive.{finding.concept.meaning}"] = finding.present
    return said


def observation_of(report: Report) -> dict[str, Value]:
    """What the pipeline observed of the input (Report.inputs_observed), and what the
    model said."""
    return {**report.inputs_observed, **report_features(report)}
