"""From scored items and a ground-truth CSV to the report's metrics: per output
(AUROC, sensitivity and specificity at the card's threshold, calibration), the same
per subgroup, and a pipeline's own metrics, each with a seeded bootstrap interval."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aidx.inference.validation import metrics as m
from aidx.inference.validation.report import (
    Estimate,
    ExtraMetric,
    Interval,
    OutputMetrics,
    RateEstimate,
    ReliabilityBin,
    SubgroupMetrics,
)

SUBGROUP_ATTRIBUTES = ("sex", "age_band", "manufacturer", "view")
ID_COLUMN = "id"


@dataclass(frozen=True)
class ScoredItem:
    """One input as the serving path scored it."""

    id: str
    scores: dict[str, float]  # output name -> probability-like score in [0, 1]
    attributes: dict[str, str] = field(default_factory=dict)  # e.g. from DICOM headers
    extras: dict[str, float] = field(default_factory=dict)  # per-item counts (CT Dice)


@dataclass(frozen=True)
class LabelRow:
    labels: dict[str, int]  # output name -> 0/1 (absent: not labelled for that output)
    attributes: dict[str, str]  # the CSV's other columns


def read_labels(path: Path, outputs: Sequence[str]) -> dict[str, LabelRow]:
    """The ground-truth CSV: an `id` column, one 0/1 column per output (blank: not
    labelled), and any other columns as subgroup attributes (sex, age, view, ...)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if ID_COLUMN not in columns:
            raise ValueError(f"{path.name}: no {ID_COLUMN!r} column")
        if not any(o in columns for o in outputs):
            raise ValueError(f"{path.name}: no column for any output of the model {list(outputs)}")
        rows = {}
        for record in reader:
            labels = {o: int(float(record[o])) for o in outputs if (record.get(o) or "").strip()}
            attributes = {
                k: v.strip() for k, v in record.items() if k not in outputs and k != ID_COLUMN and v
            }
            rows[record[ID_COLUMN].strip()] = LabelRow(labels, attributes)
    return rows


def age_band(age: str) -> str | None:
    """'45', '45.5' or a DICOM age string ('045Y', '006M') -> <18, 18-39, 40-64, 65+."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*", age)
    if match is None:
        return None
    years = (
        float(match.group(1)) / {"": 1, "Y": 1, "M": 12, "W": 52.18, "D": 365.25}[match.group(2)]
    )
    if years < 18:
        return "<18"
    return "18-39" if years < 40 else "40-64" if years < 65 else "65+"


def attributes_of(item: ScoredItem, row: LabelRow) -> dict[str, str]:
    """The item's subgroup attributes: the input's own, overridden by the labels
    file's columns; `age_band` derived from `age` unless given."""
    merged = {**item.attributes, **row.attributes}
    if "age_band" not in merged and "age" in merged:
        band = age_band(merged["age"])
        if band is not None:
            merged["age_band"] = band
    return merged


def _estimate(value: float | None, ci: tuple[float, float] | None) -> Estimate:
    return Estimate(
        value=None if value is None else round(value, 4),
        ci95=None if ci is None else Interval(low=round(ci[0], 4), high=round(ci[1], 4)),
    )


def _rate(count: m.Count, ci: tuple[float, float] | None) -> RateEstimate:
    estimate = _estimate(count.rate, ci)
    return RateEstimate(value=estimate.value, ci95=estimate.ci95, k=count.k, n=count.n)


def _auroc_or_none(scores: np.ndarray, labels: np.ndarray) -> float | None:
    positives = int(labels.sum())
    return m.auroc(scores, labels) if 0 < positives < len(labels) else None


def output_metrics(
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    seed: int,
    resamples: int,
) -> OutputMetrics:
    """AUROC, sensitivity, specificity (at `threshold`: present when score >= it) and
    ECE, with percentile-bootstrap intervals from one set of seeded resamples."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)

    def statistics(idx: np.ndarray) -> dict[str, float | None]:
        s, y = scores[idx], labels[idx]
        return {
            "auroc": _auroc_or_none(s, y),
            "sensitivity": m.sensitivity(s, y, threshold).rate,
            "specificity": m.specificity(s, y, threshold).rate,
            "ece": m.expected_calibration_error(s, y),
        }

    cis = m.bootstrap_cis(statistics, len(scores), seed=seed, resamples=resamples)
    return OutputMetrics(
        output=name,
        threshold=threshold,
        n=len(scores),
        n_positive=int(labels.sum()),
        auroc=_estimate(_auroc_or_none(scores, labels), cis.get("auroc")),
        sensitivity=_rate(m.sensitivity(scores, labels, threshold), cis.get("sensitivity")),
        specificity=_rate(m.specificity(scores, labels, threshold), cis.get("specificity")),
        ece=_estimate(
            m.expected_calibration_error(scores, labels) if len(scores) else None, cis.get("ece")
        ),
        reliability=[ReliabilityBin(**vars(b)) for b in m.reliability(scores, labels)],
        roc=m.roc_points(scores, labels) if 0 < labels.sum() < len(labels) else [],
    )


@dataclass(frozen=True)
class Labelled:
    """The scored items that have ground truth, with their merged attributes."""

    items: list[ScoredItem]
    rows: list[LabelRow]
    attributes: list[dict[str, str]]

    def per_output(
        self, name: str, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        pairs = [
            (item.scores[name], row.labels[name])
            for i, (item, row) in enumerate(zip(self.items, self.rows, strict=True))
            if (keep is None or keep[i]) and name in row.labels and name in item.scores
        ]
        scores = np.array([p[0] for p in pairs], dtype=np.float64)
        return scores, np.array([p[1] for p in pairs], dtype=int)


def join(items: Sequence[ScoredItem], labels: dict[str, LabelRow]) -> Labelled:
    kept = [item for item in items if item.id in labels]
    rows = [labels[item.id] for item in kept]
    attrs = [attributes_of(item, row) for item, row in zip(kept, rows, strict=True)]
    return Labelled(kept, rows, attrs)


def all_outputs(
    data: Labelled, thresholds: dict[str, float], *, seed: int, resamples: int
) -> list[OutputMetrics]:
    out = []
    for name, threshold in thresholds.items():
        scores, labels = data.per_output(name)
        out.append(output_metrics(name, scores, labels, threshold, seed=seed, resamples=resamples))
    return out


def subgroups(
    data: Labelled,
    thresholds: dict[str, float],
    attributes: Sequence[str],
    *,
    seed: int,
    resamples: int,
) -> list[SubgroupMetrics]:
    """The per-output metrics within each value of each attribute the items have."""
    groups = []
    for attribute in attributes:
        values = sorted({a[attribute] for a in data.attributes if attribute in a})
        for value in values:
            keep = np.array([a.get(attribute) == value for a in data.attributes])
            outputs = []
            for name, threshold in thresholds.items():
                scores, labels = data.per_output(name, keep)
                outputs.append(
                    output_metrics(name, scores, labels, threshold, seed=seed, resamples=resamples)
                )
            groups.append(
                SubgroupMetrics(
                    attribute=attribute, value=value, n=int(keep.sum()), outputs=outputs
                )
            )
    return groups


ExtraStatistics = Callable[[Sequence[ScoredItem]], dict[str, float | None]]


def extra_metrics(
    data: Labelled,
    statistics: ExtraStatistics,
    descriptions: dict[str, str],
    *,
    seed: int,
    resamples: int,
) -> list[ExtraMetric]:
    """A pipeline's own metrics over the items (from their `extras`), bootstrapped."""
    items = data.items
    if not items:
        return []
    point = statistics(items)
    cis = m.bootstrap_cis(
        lambda idx: statistics([items[i] for i in idx]), len(items), seed=seed, resamples=resamples
    )
    return [
        ExtraMetric(name=name, estimate=_estimate(value, cis.get(name)),
                    description=descriptions.get(name, ""))
        for name, value in point.items()
    ]  # fmt: skip
