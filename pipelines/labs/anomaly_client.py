"""Step 3: the anomaly model through the service's dynamic batcher.

Which analytes the model reads, in which order, comes from its card (`features`);
the alarm threshold from its label. A model that is not in service leaves the rules
screening alone, with a warning on each specimen."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from aidx.inference.assessment import NotAssessed, NotAssessedReason
from aidx.inference.errors import AidxError
from aidx.inference.model_card import Pipeline, Population, missing_section
from aidx.inference.reports import ModelRef
from aidx.inference.serving import ModelService
from aidx.pipelines.labs.anomaly import anomaly_score, tail_probability, to_features
from aidx.pipelines.labs.catalogue import Catalogue

PIPELINE = "labs"
MIN_ANALYTES = 4  # fewer observed model analytes: no multivariate score
IMPLICATED_SHARE = 0.25  # an analyte with this share of d2 is named as a contributor


@dataclass
class AnomalyResult:
    scored: np.ndarray  # [S] bool: enough analytes to score
    d2: np.ndarray  # [S]
    p: np.ndarray  # [S] tail probability
    analytes_used: np.ndarray  # [S] int
    contributions: np.ndarray  # [S, K] catalogue columns, 0 where not a feature
    implicated: np.ndarray  # [S, K] bool, only on alarmed rows
    alarm: np.ndarray  # [S] bool
    p_threshold: float
    model: ModelRef

    def score(self, i: int) -> float:
        return float(anomaly_score(self.p[i : i + 1])[0])


@dataclass(frozen=True)
class _Binding:
    name: str
    columns: np.ndarray  # catalogue column of each model feature
    p_threshold: float
    max_batch: int
    model: ModelRef
    population: Population | None


class AnomalyClient:
    def __init__(self, models: ModelService | None, catalogue: Catalogue) -> None:
        self.models = models
        self.catalogue = catalogue
        self._binding: _Binding | None = None

    def _bind(self) -> _Binding:
        if self.models is None:
            raise AidxError("no model service", code="model_unavailable")
        served = self.models.for_pipeline(PIPELINE)
        if self._binding is not None and self._binding.name == served.name:
            return self._binding
        card = served.entry.card
        if card is None or card.labs is None:
            raise missing_section(served.name, Pipeline.labs)
        features = card.labs.features
        unknown = [f for f in features if f not in self.catalogue.index]
        if unknown:
            raise AidxError(
                f"model {served.name} does not fit the catalogue (unknown features {unknown})",
                code="model_unavailable",
            )
        self._binding = _Binding(
            name=served.name,
            columns=np.array([self.catalogue.index[f] for f in features]),
            p_threshold=card.labs.p_threshold,
            max_batch=max(served.entry.max_batch_size, 1),
            model=ModelRef(
                name=served.name,
                version=served.entry.version,
                sha256=served.entry.sha256,
                demo_weights=card.demo_weights,
            ),
            population=card.labs.population,
        )
        return self._binding

    def available(self) -> str | None:
        """None when the model can score; else why not."""
        try:
            self._bind()
        except AidxError as exc:
            return exc.message
        return None

    def outside_population(self, age_y: np.ndarray) -> list[NotAssessed | None]:
        """Per specimen: why the model does not apply (age outside the population it
        was trained on, or unknown), None where it does or no population is stated."""
        try:
            population = self._bind().population
        except AidxError:
            return [None] * len(age_y)
        if population is None:
            return [None] * len(age_y)
        low, high = population.min_age_y, population.max_age_y
        trained = population.description or f"ages {low or 0:g}-{high or 150:g} y"
        out: list[NotAssessed | None] = []
        for age in age_y:
            if np.isnan(age) and (low is not None or high is not None):
                why = "the patient's age is unknown"
            elif (low is not None and age < low) or (high is not None and age >= high):
                why = f"the patient is {age:.1f} years old"
            else:
                out.append(None)
                continue
            out.append(
                NotAssessed(
                    reason=NotAssessedReason.model_not_applicable,
                    message=f"anomaly model not applicable: trained on {trained}; {why}",
                )
            )
        return out

    async def score(
        self, values: np.ndarray, *, priority: int | None = None, timeout_s: float | None = None
    ) -> AnomalyResult | None:
        """`values` [S, K] canonical (NaN: absent). None when the model is not in service."""
        try:
            b = self._bind()
        except AidxError:
            return None
        assert self.models is not None
        s, k = values.shape
        x = to_features(values[:, b.columns])
        used = (~np.isnan(x)).sum(axis=1)
        scored = used >= MIN_ANALYTES
        rows = np.flatnonzero(scored)
        d2 = np.zeros(s)
        contributions = np.zeros((s, k))
        if rows.size:
            chunks = [rows[i : i + b.max_batch] for i in range(0, rows.size, b.max_batch)]
            results = await asyncio.gather(
                *(
                    self.models.infer(
                        b.name, {"values": x[c]}, priority=priority, timeout_s=timeout_s
                    )
                    for c in chunks
                )
            )
            for c, result in zip(chunks, results, strict=True):
                d2[c] = result.outputs["d2"][:, 0]
                contributions[np.ix_(c, b.columns)] = result.outputs["contributions"]
        p = np.where(scored, tail_probability(d2, used), 1.0)
        alarm = scored & (p < b.p_threshold)
        share = contributions / np.maximum(d2, 1e-9)[:, None]
        top = np.zeros_like(share, dtype=bool)
        top[np.arange(s), np.argmax(contributions, axis=1)] = True
        implicated = alarm[:, None] & ((share >= IMPLICATED_SHARE) | top)
        return AnomalyResult(
            scored, d2, p, used, contributions, implicated, alarm, b.p_threshold, b.model
        )
