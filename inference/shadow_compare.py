"""How a shadow version's outputs compare with the serving version's on the same batch.

Each version's card says how to read its outputs as per-label scores (probabilities)
and where each label's threshold lies; a label is compared when both cards name it.
Per label the tally keeps the counts (agree, both present, serving only, shadow only,
out of n) and the sums behind Pearson's r, so tallies of many batches add up exactly
and no rate is ever given without its n.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from aidx.inference.model_card import ModelCard

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class ScoreView:
    """A card's outputs as scores: one column per label; thresholds None when the
    card gives none to decide present / absent on (only the scores are compared)."""

    labels: tuple[str, ...]
    thresholds: tuple[float, ...] | None
    scores: Callable[[Outputs], np.ndarray]  # outputs -> (items, labels) float64


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x.astype(np.float64))))


def _columns(array: np.ndarray) -> np.ndarray:
    """(items, ...) -> (items, columns) float64."""
    return np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)


def score_view(card: ModelCard | None) -> ScoreView | None:
    """How to score this card's model, or None for a card no comparison knows."""
    if card is None:
        return None
    if card.cxr is not None:
        cxr = card.cxr
        names = tuple(label.name for label in cxr.labels)
        limits = tuple(label.threshold for label in cxr.labels)

        def cxr_scores(out: Outputs) -> np.ndarray:
            raw = _columns(out[cxr.scores_output])
            return raw if cxr.scores_are_probabilities else _sigmoid(raw)

        return ScoreView(names, limits, cxr_scores)
    if card.wsi is not None:
        wsi = card.wsi
        return ScoreView(
            (wsi.label.name,),
            (wsi.label.threshold,),
            lambda out: _columns(out[wsi.probabilities_output])[:, :1],
        )
    if card.ct is not None:  # a window's score: its most probable voxel
        label = card.ct.label
        return ScoreView(
            (label.name,),
            (label.threshold,),
            lambda out: _sigmoid(_columns(out["logits"]).max(axis=1, keepdims=True)),
        )
    if card.labs is not None:  # the Mahalanobis distance; the alarm needs more than it
        return ScoreView((card.labs.label.name,), None, lambda out: _columns(out["d2"])[:, :1])
    return None


@dataclass
class LabelTally:
    """One label's comparison over n items (several batches add up with `add`)."""

    n: int = 0
    agree: int = 0  # present / absent the same at each version's own threshold
    both_present: int = 0
    serving_only: int = 0
    shadow_only: int = 0
    decided: int = 0  # items with a present / absent call (0: no thresholds)
    sum_x: float = 0.0  # serving scores
    sum_y: float = 0.0  # shadow scores
    sum_xx: float = 0.0
    sum_yy: float = 0.0
    sum_xy: float = 0.0

    def add(self, other: LabelTally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def agreement(self) -> float | None:
        return self.agree / self.decided if self.decided else None

    @property
    def correlation(self) -> float | None:
        """Pearson's r of the scores; None under 2 items or with a constant score."""
        if self.n < 2:
            return None
        vx = self.n * self.sum_xx - self.sum_x**2
        vy = self.n * self.sum_yy - self.sum_y**2
        if vx <= 0 or vy <= 0:
            return None
        r = (self.n * self.sum_xy - self.sum_x * self.sum_y) / math.sqrt(vx * vy)
        return max(-1.0, min(1.0, r))

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def tally(x: np.ndarray, y: np.ndarray, x_limit: float | None, y_limit: float | None) -> LabelTally:
    """One label over a batch: serving scores x, shadow scores y (each its threshold)."""
    result = LabelTally(
        n=int(x.size),
        sum_x=float(x.sum()),
        sum_y=float(y.sum()),
        sum_xx=float((x * x).sum()),
        sum_yy=float((y * y).sum()),
        sum_xy=float((x * y).sum()),
    )
    if x_limit is not None and y_limit is not None:
        xp, yp = x >= x_limit, y >= y_limit
        result.decided = int(x.size)
        result.agree = int((xp == yp).sum())
        result.both_present = int((xp & yp).sum())
        result.serving_only = int((xp & ~yp).sum())
        result.shadow_only = int((~xp & yp).sum())
    return result


def compare(
    serving: ScoreView, shadow: ScoreView, serving_out: Outputs, shadow_out: Outputs
) -> dict[str, LabelTally]:
    """Per label both versions name: the batch's tally."""
    xs, ys = serving.scores(serving_out), shadow.scores(shadow_out)
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"serving scored {xs.shape[0]} items, the shadow {ys.shape[0]}")
    result = {}
    for i, name in enumerate(serving.labels):
        if name not in shadow.labels:
            continue
        j = shadow.labels.index(name)
        x_limit = serving.thresholds[i] if serving.thresholds else None
        y_limit = shadow.thresholds[j] if shadow.thresholds else None
        result[name] = tally(xs[:, i], ys[:, j], x_limit, y_limit)
    return result
