"""Whether the model may judge a radiograph: the content checks (content.py) and
the model's out-of-distribution gate (inference/ood.py), composed in one place,
before the model runs.

The first check that fails decides why the findings are not assessed, in the order
blank image, unsupported view, not a chest, out of distribution. Under the site's
`warn` policy an image out of distribution is still scored, with a warning first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aidx.inference.assessment import NotAssessed, OodPolicy, OodStatus, OodVerdict
from aidx.inference.card_sections import RadiographView
from aidx.inference.ood import UNCALIBRATED_WARNING, OodGate, uncalibrated
from aidx.pipelines.cxr.content import (
    check_blank,
    check_chest,
    check_distribution,
    check_view,
    out_of_distribution_warning,
    silent_projection_warning,
)
from aidx.pipelines.cxr.decode import Radiograph


@dataclass(frozen=True)
class Screen:
    """What the checks need of the model: its gate, its views, the site's policy."""

    gate: OodGate | None
    views: tuple[RadiographView, ...]
    policy: OodPolicy = OodPolicy.not_assessed


@dataclass(frozen=True)
class Assessment:
    """The verdict on one input: why it is not assessed (None: the model may judge
    it), the OOD verdict, and the warnings the report carries."""

    not_assessed: NotAssessed | None
    ood: OodVerdict
    warnings: tuple[str, ...]


def _first(checks: Sequence[NotAssessed | None]) -> NotAssessed | None:
    return next((check for check in checks if check is not None), None)


def _warnings(radiograph: Radiograph, verdict: OodVerdict, scored: bool) -> list[str]:
    notes = []
    if verdict.status is OodStatus.uncalibrated:
        notes.append(UNCALIBRATED_WARNING)
    elif verdict.status is OodStatus.out_of_distribution and scored:
        notes.append(out_of_distribution_warning(verdict))
    if radiograph.projection.frontal is None:
        notes.append(silent_projection_warning(verdict))
    return [*notes, *radiograph.warnings]


def screen(radiograph: Radiograph, tensor: np.ndarray, model: Screen) -> Assessment:
    """Run the checks on a decoded radiograph and its model tensor."""
    verdict = (
        model.gate.verdict(tensor, model.policy)
        if model.gate is not None
        else uncalibrated(model.policy)
    )
    why = _first(
        [
            check_blank(radiograph.image01, radiograph.stored_spread),
            check_view(radiograph.projection, model.views),
            check_chest(radiograph.body_part_stated, verdict),
            check_distribution(verdict) if model.policy is OodPolicy.not_assessed else None,
        ]
    )
    return Assessment(why, verdict, tuple(_warnings(radiograph, verdict, why is None)))
