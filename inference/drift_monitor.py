"""Drift monitoring per model: every analysed input's observation is kept
(drift_store.py), and each model version's windows (its last N observations, and
those of the last days) are compared with the reference stored beside it
(`<version>/drift.json`, inference/drift.py), on demand (`GET /v1/models/{name}/drift`)
and at each scrape of /metrics.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, ValidationError

from aidx.inference.drift import (
    REFERENCE_FILE,
    DriftReference,
    FeatureDrift,
    Observation,
    compare,
    observation_of,
)
from aidx.inference.drift_store import DriftStore
from aidx.inference.errors import NotFound
from aidx.inference.reports import Report
from aidx.inference.repository import ModelEntry
from aidx.inference.settings_sections import DriftSettings

log = logging.getLogger(__name__)
PRUNE_EVERY = 50  # observations added between two prunes of a model's rows
DAY_S = 86_400.0


class WindowKind(enum.StrEnum):
    by_count = "count"  # the last N observations
    by_day = "day"  # those of the last D days


class DriftWindow(BaseModel):
    window: WindowKind
    size: float = Field(description="N observations (count) or D days (day)")
    n: int = Field(description="observations in the window")
    features: list[FeatureDrift]


class DriftThresholds(BaseModel):
    psi_alert: float
    p_alert: float
    min_window: int


class DriftStatus(BaseModel):
    model: str
    version: int
    reference_dataset: str
    reference_n: int
    thresholds: DriftThresholds
    windows: list[DriftWindow]
    drifting: list[str] = Field(description="features drifting in any window")


def reference_path(entry: ModelEntry) -> Path:
    return entry.directory / str(entry.version) / REFERENCE_FILE


class DriftMonitor:
    """`entries`: the served models by name (ModelService.models' entries)."""

    def __init__(
        self,
        store: DriftStore,
        settings: DriftSettings,
        entries: Callable[[], Mapping[str, ModelEntry]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.entries = entries
        self.clock = clock
        self._references: dict[tuple[str, int], DriftReference | None] = {}
        self._added: dict[str, int] = {}
        self._lock = threading.Lock()

    def reference(self, entry: ModelEntry) -> DriftReference | None:
        """The model version's reference (None: it has none), read once."""
        key = (entry.name, entry.version)
        if key not in self._references:
            path = reference_path(entry)
            found = None
            try:
                found = DriftReference.load(path) if path.is_file() else None
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("drift reference of %s unreadable: %s", entry.name, exc)
            self._references[key] = found
        return self._references[key]

    def watch(self, report: Report) -> None:
        """Keep what the report's model saw and said (called once per analysed input);
        nothing for a model version without a reference (nothing to compare with)."""
        self.observe(report.model.name, report.model.version, [observation_of(report)])

    def observe(self, name: str, version: int, observations: Sequence[Observation]) -> None:
        """Keep observations of what model `name` (`version`) saw and said, made by any
        pipeline (a report's, a lab specimen's, a slide's); nothing when the served
        version differs or has no reference."""
        if not self.settings.enabled or not observations:
            return
        entry = self.entries().get(name)
        if entry is None or entry.version != version or self.reference(entry) is None:
            return
        now = self.clock()
        self.store.add_many(name, version, observations, now)
        with self._lock:
            before = self._added.get(name, 0)
            self._added[name] = added = before + len(observations)
        if added // PRUNE_EVERY != before // PRUNE_EVERY:
            self.store.prune(name, version, self.settings.window_count, self._day_start(now))

    def _day_start(self, now: float) -> float:
        return now - self.settings.window_days * DAY_S

    def _window(self, kind: WindowKind, entry: ModelEntry, ref: DriftReference) -> DriftWindow:
        s = self.settings
        if kind is WindowKind.by_count:
            rows = self.store.last(entry.name, entry.version, s.window_count)
            size = float(s.window_count)
        else:
            since = self._day_start(self.clock())
            rows = self.store.since(entry.name, entry.version, since, s.max_day_observations)
            size = s.window_days
        return DriftWindow(window=kind, size=size, n=len(rows), features=compare(ref, rows, s))

    def _status(self, entry: ModelEntry, ref: DriftReference) -> DriftStatus:
        windows = [self._window(kind, entry, ref) for kind in WindowKind]
        drifting = sorted({f.feature for w in windows for f in w.features if f.drifting})
        s = self.settings
        return DriftStatus(
            model=entry.name, version=entry.version, reference_dataset=ref.dataset,
            reference_n=ref.n, windows=windows, drifting=drifting,
            thresholds=DriftThresholds(psi_alert=s.psi_alert, p_alert=s.p_alert,
                                       min_window=s.min_window),
        )  # fmt: skip

    def status(self, name: str) -> DriftStatus:
        """The model's windows against its reference (NotFound: no such model, or no
        reference stored with it)."""
        entry = self.entries().get(name)
        if entry is None:
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        ref = self.reference(entry)
        if ref is None:
            raise NotFound(
                f"model {name!r} version {entry.version} has no drift reference "
                f"({entry.version}/{REFERENCE_FILE}; `aidx models drift-reference`)",
                code="drift_reference_not_found",
            )
        return self._status(entry, ref)

    def statuses(self) -> Iterator[DriftStatus]:
        """Every served model that has a reference."""
        for entry in list(self.entries().values()):
            ref = self.reference(entry)
            if ref is not None:
                yield self._status(entry, ref)


class DriftCollector(Collector):
    """Each model's drift computed at each scrape: PSI, p-value and alert per feature
    and window, and the observations each window holds (no alert without its n)."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        labels = ["model", "version", "feature", "window"]
        return {
            "psi": GaugeMetricFamily(
                "aidx_drift_psi", "Population stability index of a feature's window "
                "against the model's reference", labels=labels),
            "p_value": GaugeMetricFamily(
                "aidx_drift_p_value", "Two-sample test p-value (KS for numbers, chi-square "
                "for categories) of a feature's window against the reference", labels=labels),
            "alert": GaugeMetricFamily(
                "aidx_drift_alert", "1 when a feature drifts: enough observations, PSI at "
                "or above the alert level and p below the alert p-value", labels=labels),
            "n": GaugeMetricFamily(
                "aidx_drift_window_observations", "Observations of a feature in the window",
                labels=labels),
        }  # fmt: skip

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()  # registering queries nothing

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        for status in self.monitor.statuses():
            for window in status.windows:
                for f in window.features:
                    labels = [status.model, str(status.version), f.feature, window.window.value]
                    families["n"].add_metric(labels, float(f.window_n))
                    families["alert"].add_metric(labels, float(f.drifting))
                    if f.psi is not None and f.p_value is not None:
                        families["psi"].add_metric(labels, f.psi)
                        families["p_value"].add_metric(labels, f.p_value)
        yield from families.values()
