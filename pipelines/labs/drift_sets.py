"""The labs side of `aidx models drift-reference`: the recipe's held-out panels
(pipelines/labs/train.py: NHANES adults completed with synthetic analytes, the same
split and seed) as the specimens the service would receive, in canonical units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.types import LabResultIn, SpecimenIn

COLLECTED = datetime(2026, 1, 1, tzinfo=UTC)


def specimens(
    values: np.ndarray, male: np.ndarray, age_y: np.ndarray, prefix: str
) -> list[SpecimenIn]:
    """One specimen (one patient) per row of `values` ([n, F], the model's features in
    the catalogue's canonical units; NaN: not measured)."""
    from aidx.pipelines.labs.train import model_features

    catalogue = load_catalogue()
    analytes = [catalogue.analyte(key) for key in model_features()]
    made = []
    for i, row in enumerate(values):
        results = [
            LabResultIn(code=a.loinc[0], value=round(float(v), 4), unit=a.unit)
            for a, v in zip(analytes, row, strict=True)
            if np.isfinite(v)
        ]
        made.append(
            SpecimenIn(
                specimen_id=f"{prefix}-{i}", patient_id=f"{prefix}-P{i}",
                sex="M" if male[i] else "F", age_y=float(age_y[i]),
                collected_at=COLLECTED + timedelta(minutes=i), results=results,
            )  # fmt: skip
        )
    return made


def recipe_specimens(recipe_seed: int, part: str, n: int | None = None) -> list[SpecimenIn]:
    """The first `n` people of the recipe's `part` (train, val, heldout) as specimens."""
    from aidx.pipelines.labs.train import panels_for, split

    people, panels = panels_for(recipe_seed)
    index = split(len(people.age_y), recipe_seed)[part][:n]
    return specimens(panels[index], people.sex_male[index], people.age_y[index], part)


def synthetic_inputs(recipe_seed: int, n: int) -> tuple[list[SpecimenIn], str]:
    """The recipe's first `n` held-out panels, and what they are (for the card)."""
    found = recipe_specimens(recipe_seed, "heldout", n)
    dataset = (
        f"the recipe's held-out panels (aidx.pipelines.labs.train, seed {recipe_seed}: "
        f"NHANES 2017-18 adults completed with synthetic analytes), the first {len(found)}, "
        "full panels in canonical units"
    )
    return found, dataset
