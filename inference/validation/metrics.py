"""Binary-classification metrics in numpy: AUROC, rates with their counts, expected
calibration error and reliability bins, ROC points, and seeded percentile-bootstrap
confidence intervals over items."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_BINS = 10


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney U statistic, ties counted half)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative cases")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)  # average over ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_points(scores: np.ndarray, labels: np.ndarray, max_points: int = 200) -> list[tuple]:
    """(false-positive rate, true-positive rate) at every distinct cut, from (0, 0) to
    (1, 1), thinned to at most `max_points` for plotting."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(y)[last_of_tie], np.cumsum(~y)[last_of_tie]
    tpr = np.r_[0.0, tp / max(int(positive.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~positive).sum()), 1)]
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).astype(int))
    return [(round(float(fpr[i]), 5), round(float(tpr[i]), 5)) for i in keep]


@dataclass(frozen=True)
class Count:
    """A rate's numerator and denominator: no rate without its n."""

    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None


def sensitivity(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Count:
    positive = np.asarray(labels).astype(bool)
    called = np.asarray(scores)[positive] >= threshold
    return Count(int(called.sum()), int(positive.sum()))


def specificity(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Count:
    negative = ~np.asarray(labels).astype(bool)
    cleared = np.asarray(scores)[negative] < threshold
    return Count(int(cleared.sum()), int(negative.sum()))


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    n: int
    mean_predicted: float | None
    observed_rate: float | None


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]; a probability of exactly 1 falls in the last."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels).astype(np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append(
            ReliabilityBin(
                lower=b / bins,
                upper=(b + 1) / bins,
                n=n,
                mean_predicted=float(p[inside].mean()) if n else None,
                observed_rate=float(y[inside].mean()) if n else None,
            )
        )
    return out


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """Sum over bins of (bin share of items) x |observed rate - mean probability|."""
    total = len(np.asarray(probabilities))
    if total == 0:
        raise ValueError("ECE needs at least one item")
    return float(
        sum(
            b.n / total * abs(b.observed_rate - b.mean_predicted)  # type: ignore[operator]
            for b in reliability(probabilities, labels, bins)
            if b.n
        )
    )


Statistics = Callable[[np.ndarray], dict[str, float | None]]  # item indices -> values


def bootstrap_cis(
    statistics: Statistics,
    n_items: int,
    *,
    seed: int,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of each named statistic over items resampled with
    replacement (seeded, the same resamples for every statistic); a resample where a
    statistic is undefined (None) is skipped for it. A statistic defined in fewer than
    half the resamples gets None."""
    if n_items == 0:
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(resamples):
        for name, value in statistics(rng.integers(0, n_items, n_items)).items():
            kept = values.setdefault(name, [])
            if value is not None and np.isfinite(value):
                kept.append(value)
    tail = (1.0 - level) / 2 * 100
    out: dict[str, tuple[float, float] | None] = {}
    for name, kept in values.items():
        if len(kept) < resamples / 2:
            out[name] = None
            continue
        low, high = np.percentile(kept, [tail, 100 - tail])
        out[name] = (float(low), float(high))
    return out
