"""Content checks: is this a chest CT with lungs in it, before any lesion statement.

The header's BodyPartExamined, when present, must name the chest (a head or pelvis
series is not what the route takes: 422). The image must hold aerated lung: a chest
CT that cuts the lungs off, or a series whose header says nothing, is judged by the
air-filled lung volume inside the body; below the card's minimum the finding is
*not assessed* (no probability, no present/absent, no lesions), never "absent".

Then the model's out-of-distribution gate (inference/ood.py) judges the lung-windowed
grid the model would be given: out of distribution, the finding is not assessed
(`out_of_distribution`), or, under the site's `warn` policy, scored with a warning
first. Every report carries the verdict (in, out, or uncalibrated without a gate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from aidx.inference.assessment import (
    NotAssessed,
    NotAssessedReason,
    OodPolicy,
    OodStatus,
    OodVerdict,
)
from aidx.inference.errors import Unprocessable
from aidx.inference.ood import (
    OodGate,
    out_of_distribution_warning,
    stop_out_of_distribution,
    verdict_for,
)

# BodyPartExamined values (upper case, letters only) that contain one of these pass:
# CHEST, THORAX, LUNG, and the combined regions (CHESTABDOMEN, CHESTABDPELVIS,
# NECKCHEST, WHOLEBODY...; PS3.16 Annex L), vendor text such as "CT CHEST" and the
# Romance spellings (TORAX). Anything else (HEAD, BRAIN, NECK, ABDOMEN, PELVIS, the
# spine, limbs, HEART) names a part that is not a chest CT.
CHEST_WORDS = ("CHEST", "THORAX", "THORAC", "TORAX", "LUNG", "WHOLEBODY")

OOD_UNCALIBRATED_WARNING = (
    "the CT model has no out-of-distribution reference: nothing checked that this "
    "series resembles its training data"
)


def names_the_chest(body_part: str) -> bool:
    letters = re.sub(r"[^A-Z]", "", body_part.upper())
    return any(word in letters for word in CHEST_WORDS)


def check_body_part(values: Iterable[object]) -> None:
    """Refuse a series whose BodyPartExamined names a part other than the chest;
    an absent or empty value passes (the lungs check decides)."""
    named = sorted({str(v).strip() for v in values if v is not None and str(v).strip()})
    others = [value for value in named if not names_the_chest(value)]
    if others:
        raise Unprocessable(
            f"body part {others[0]!r} is not the chest; the CT route takes chest CT series",
            code="unsupported_body_part",
            body_part=others[0],
        )


def lungs_absent(lung_ml: float, min_lung_ml: float) -> NotAssessed | None:
    """`no_lungs` when the air-filled lung volume inside the body is under the
    minimum (the card's `ct.min_lung_ml`), else None."""
    if lung_ml >= min_lung_ml:
        return None
    return NotAssessed(
        reason=NotAssessedReason.no_lungs,
        message=(
            f"{lung_ml:.0f} mL of aerated lung in the series, under the {min_lung_ml:.0f} mL "
            "this model needs: not a chest CT, or the lungs are outside the field of view"
        ),
    )


@dataclass(frozen=True)
class Screening:
    """Whether the model may judge the series: why not (None: it may), the OOD verdict,
    and the warnings that go first on the report."""

    not_assessed: NotAssessed | None
    ood: OodVerdict
    warnings: tuple[str, ...]


def screen(
    image: np.ndarray,
    lung_ml: float,
    min_lung_ml: float,
    gate: OodGate | None,
    policy: OodPolicy,
) -> Screening:
    """The lungs check, then the gate on the model grid `image` [1, X, Y, Z]: the
    first that fails decides why the finding is not assessed."""
    verdict = verdict_for(gate, image, policy)
    why = lungs_absent(lung_ml, min_lung_ml) or stop_out_of_distribution(verdict, "series")
    warnings: list[str] = []
    if verdict.status is OodStatus.uncalibrated:
        warnings.append(OOD_UNCALIBRATED_WARNING)
    elif verdict.status is OodStatus.out_of_distribution and why is None:
        warnings.append(out_of_distribution_warning(verdict, "series"))
    return Screening(why, verdict, tuple(warnings))
