"""Classification metrics shared by the training recipes and their tests."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative cases")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sensitivity_specificity(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[float, float]:
    positive = np.asarray(labels).astype(bool)
    called = np.asarray(probabilities) >= threshold
    return float(called[positive].mean()), float((~called[~positive]).mean())


def youden_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The probability cut (present when p >= cut) that maximises sensitivity +
    specificity - 1; midway between neighbouring scores, so it is not fitted to one."""
    p = np.sort(np.unique(np.asarray(probabilities, dtype=np.float64)))
    cuts = np.concatenate([[p[0]], (p[:-1] + p[1:]) / 2, [p[-1] + 1e-9]])
    best, best_j = float(cuts[0]), -np.inf
    for cut in cuts:
        sens, spec = sensitivity_specificity(probabilities, labels, float(cut))
        if sens + spec - 1 > best_j:
            best, best_j = float(cut), sens + spec - 1
    return best
