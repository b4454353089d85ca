"""The validation report's data model: what the JSON holds and the HTML shows. Every
rate carries its counts; every estimate its bootstrap interval where one exists.
Comparisons beyond the built-in ones (a shadow model's, say) are added as typed
`Section`s with `add_section`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class Interval(BaseModel):
    low: float
    high: float

    def contains(self, value: float, slack: float = 1e-9) -> bool:
        return self.low - slack <= value <= self.high + slack


class Estimate(BaseModel):
    value: float | None
    ci95: Interval | None = None  # percentile bootstrap over items


class RateEstimate(Estimate):
    k: int  # numerator
    n: int  # denominator: no rate without its n


class ReliabilityBin(BaseModel):
    lower: float
    upper: float
    n: int
    mean_predicted: float | None
    observed_rate: float | None


class OutputMetrics(BaseModel):
    """One output (finding) on one set of items."""

    output: str
    threshold: float
    n: int
    n_positive: int
    auroc: Estimate
    sensitivity: RateEstimate
    specificity: RateEstimate
    ece: Estimate
    reliability: list[ReliabilityBin]
    roc: list[tuple[float, float]] = Field(default_factory=list)  # (FPR, TPR), for the plot


class SubgroupMetrics(BaseModel):
    attribute: str  # sex, age_band, manufacturer, view, or a labels-file column
    value: str
    n: int
    outputs: list[OutputMetrics]


class ExtraMetric(BaseModel):
    """A pipeline's own metric (e.g. CT Dice), bootstrapped over items like the rest."""

    name: str
    estimate: Estimate
    description: str = ""


class CardComparison(BaseModel):
    """A metric the model card states, against the one measured here."""

    metric: str
    card_value: float
    measured: Estimate
    n: int | None = None
    within_ci: bool | None = None  # None: no interval to judge by

    @classmethod
    def of(
        cls, metric: str, card_value: float, measured: Estimate, n: int | None
    ) -> CardComparison:
        inside = measured.ci95.contains(card_value) if measured.ci95 is not None else None
        return cls(metric=metric, card_value=card_value, measured=measured, n=n, within_ci=inside)


class Table(BaseModel):
    columns: list[str]
    rows: list[list[bool | str | float | int | None]]


class Figure(BaseModel):
    title: str
    png_base64: str  # embedded in the HTML as a data: URL (no external resources)


class Section(BaseModel):
    """A further part of the report (e.g. a shadow model's comparison): text, tables
    and figures, rendered in order after the built-in parts."""

    key: str  # unique within a report; adding a section with the same key replaces it
    title: str
    text: str = ""
    tables: list[Table] = Field(default_factory=list)
    figures: list[Figure] = Field(default_factory=list)


class DatasetInfo(BaseModel):
    source: str  # the folder, or the recipe's held-out set that was written to it
    labels_file: str
    items: int  # inputs found
    scored: int  # inputs the model scored (the metrics' items)
    not_scored: dict[str, int] = Field(default_factory=dict)  # reason -> count


class ModelInfo(BaseModel):
    name: str
    version: int
    pipeline: str
    sha256: str | None
    demo_weights: bool


class ValidationReport(BaseModel):
    schema_version: int = SCHEMA_VERSION
    created: datetime
    model: ModelInfo
    dataset: DatasetInfo
    seed: int
    resamples: int
    outputs: list[OutputMetrics]
    subgroups: list[SubgroupMetrics] = Field(default_factory=list)
    extra: list[ExtraMetric] = Field(default_factory=list)
    card_comparison: list[CardComparison] = Field(default_factory=list)
    sections: list[Section] = Field(default_factory=list)

    def output(self, name: str) -> OutputMetrics:
        for metrics in self.outputs:
            if metrics.output == name:
                return metrics
        raise KeyError(name)

    def subgroup(self, attribute: str, value: str) -> SubgroupMetrics | None:
        for group in self.subgroups:
            if group.attribute == attribute and group.value == value:
                return group
        return None

    def extra_metric(self, name: str) -> ExtraMetric:
        for metric in self.extra:
            if metric.name == name:
                return metric
        raise KeyError(name)


def add_section(report: ValidationReport, section: Section) -> ValidationReport:
    """The report with `section` added (or replacing the one with its key)."""
    kept = [s for s in report.sections if s.key != section.key]
    return report.model_copy(update={"sections": [*kept, section]})
