"""The tile model's out-of-distribution gate over a slide.

Each tissue tile the model scores is also scored by the gate (inference/ood.py) on
the tile as the model takes it. Under the `not_assessed` policy a tile out of
distribution is left out of the heatmap and the regions; when more than
MAX_OOD_TILE_FRACTION of the slide's tissue tiles are out of distribution, the slide
as a whole is unlike the model's data and its finding is not assessed
(`out_of_distribution`). Under the site's `warn` policy every tile is kept and the
report warns first.

The slide's score is the (k+1)-th highest tile score, k = floor(n x fraction): it
exceeds the threshold exactly when more than that fraction of the n tiles do, so the
verdict's score, threshold and status agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aidx.inference.assessment import (
    NotAssessed,
    NotAssessedReason,
    OodPolicy,
    OodStatus,
    OodVerdict,
)
from aidx.inference.ood import OodGate, ood_words, uncalibrated

MAX_OOD_TILE_FRACTION = 0.25

UNCALIBRATED_OOD = (
    "the tile model has no out-of-distribution reference (uncalibrated): nothing checks "
    "that this slide resembles the data it was trained on"
)


def tile_tensor(tile: np.ndarray) -> np.ndarray:
    """A uint8 tile (H, W, 3) as the gate sees it: (3, H, W) in 0..1."""
    return np.ascontiguousarray(tile.transpose(2, 0, 1), dtype=np.float32) / 255.0


def tile_scores(gate: OodGate, tiles: np.ndarray) -> np.ndarray:
    """The gate's score of each tile [N, H, W, 3] (float32 [N])."""
    return np.array([gate.score(tile_tensor(tile)) for tile in tiles], dtype=np.float32)


@dataclass(frozen=True)
class SlideGate:
    """The gate's word on a slide: the verdict, how many of its scored tiles were
    out of distribution, and why the slide is not assessed (None: it is)."""

    verdict: OodVerdict
    tiles: int
    tiles_out: int
    not_assessed: NotAssessed | None = None

    def warnings(self) -> list[str]:
        """What the report says first about the gate."""
        status = self.verdict.status
        if status is OodStatus.uncalibrated:
            return [UNCALIBRATED_OOD]
        if self.tiles_out == 0 or self.not_assessed is not None:
            return []
        share = f"{self.tiles_out} of {self.tiles} tissue tiles ({self.tiles_out / self.tiles:.0%})"
        if self.verdict.policy is OodPolicy.warn:
            head = "OUT OF DISTRIBUTION: " if status is OodStatus.out_of_distribution else ""
            return [
                f"{head}{share} are unlike the tiles this model was trained and validated "
                f"on (slide {ood_words(self.verdict)}); they are scored only because this "
                "site's policy is `warn`: do not rely on them"
            ]
        return [f"{share} are out of distribution: left out of the heatmap and the regions"]


def judge_slide(gate: OodGate | None, scores: np.ndarray, policy: OodPolicy) -> SlideGate:
    """The slide's verdict from its tissue tiles' scores (empty: no tile was scored)."""
    if gate is None:
        return SlideGate(uncalibrated(policy), len(scores), 0)
    out = int(np.sum(scores > gate.threshold))
    if not len(scores):  # no tissue tile: nothing like the model's inputs to judge
        verdict = OodVerdict(
            status=OodStatus.out_of_distribution, threshold=gate.threshold,
            method=gate.method, policy=policy,
        )  # fmt: skip
        return SlideGate(verdict, 0, 0)
    k = math.floor(len(scores) * MAX_OOD_TILE_FRACTION)
    score = float(np.sort(scores)[::-1][k])
    inside = score <= gate.threshold
    verdict = OodVerdict(
        status=OodStatus.in_distribution if inside else OodStatus.out_of_distribution,
        score=round(score, 4), threshold=gate.threshold, method=gate.method, policy=policy,
    )  # fmt: skip
    why = None
    if not inside and policy is OodPolicy.not_assessed:
        why = NotAssessed(
            reason=NotAssessedReason.out_of_distribution,
            message=(
                f"{out} of {len(scores)} tissue tiles ({out / len(scores):.0%}) are unlike "
                "the tiles this model was trained and validated on, more than the "
                f"{MAX_OOD_TILE_FRACTION:.0%} it allows ({ood_words(verdict)}): its "
                "findings would not be reliable"
            ),
        )
    return SlideGate(verdict, len(scores), out, why)
