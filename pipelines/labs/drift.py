"""What lab screening observes of each specimen for drift monitoring
(aidx.inference.drift): each analyte's value in its canonical unit, and what the
anomaly model said (its score, -log10 of the tail probability, and whether it
alarmed). Values the screener already computed: no extra pass."""

from __future__ import annotations

from aidx.inference.drift import Value
from aidx.pipelines.labs.types import ResultStatus, SpecimenOutcome


def specimen_observation(outcome: SpecimenOutcome) -> dict[str, Value]:
    """`value.<analyte>` per screened numeric result, `anomaly_score` and
    `positive.anomaly` when the model scored the specimen."""
    observed: dict[str, Value] = {}
    for result in outcome.results:
        if (
            result.status is ResultStatus.screened
            and result.analyte is not None
            and result.comparator is None  # a limit is not a value
            and result.value_canonical is not None
        ):
            observed[f"value.{result.analyte}"] = round(result.value_canonical, 4)
    if outcome.anomaly is not None:
        observed["anomaly_score"] = round(outcome.anomaly.score, 4)
        observed["positive.anomaly"] = outcome.anomaly.present
    return observed


def observations_by_model(
    outcomes: list[SpecimenOutcome],
) -> dict[tuple[str, int], list[dict[str, Value]]]:
    """The specimens the anomaly model scored, grouped by its name and version (a
    specimen it did not score was not seen by it)."""
    grouped: dict[tuple[str, int], list[dict[str, Value]]] = {}
    for outcome in outcomes:
        if outcome.anomaly is not None:
            model = outcome.anomaly.model
            grouped.setdefault((model.name, model.version), []).append(
                specimen_observation(outcome)
            )
    return grouped
