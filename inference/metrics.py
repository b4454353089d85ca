"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aidx.inference.reports import Report
from aidx.inference.shadow_store import ShadowBatch

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# From a few seconds (REST, analysed) to an hour (a PACS down for a while).
_TURNAROUND_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._by_model: dict[str, tuple[Gauge, Histogram, Histogram, Histogram]] = {}
        r = self.registry
        # process_cpu_seconds_total, resident memory, open fds: what an operator sizes
        # replicas by, and what benchmarks/batching.py divides by requests served.
        ProcessCollector(registry=r)
        self.queue_depth_gauge = Gauge(
            "aidx_queue_depth", "Requests waiting in a model's queue", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "aidx_batch_size",
            "Items per executed batch",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "aidx_queue_wait_seconds",
            "Time a request waited for its batch",
            ["model"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "aidx_compute_seconds",
            "Model execution time per batch",
            ["model"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "aidx_requests_total",
            "Requests by route (HTTP path template or gRPC method) and status (HTTP or gRPC)",
            ["route", "status"],
            registry=r,
        )
        self.turnaround = Histogram(
            "aidx_turnaround_seconds",
            "Seconds from a report's input received to each stage (analysed, delivered_*)",
            ["pipeline", "stage"],
            buckets=_TURNAROUND_BUCKETS,
            registry=r,
        )
        self.reports = Counter(
            "aidx_reports_total",
            "Reports made, by pipeline, model, outcome (assessed, or why not: "
            "out_of_distribution, blank_image, ...) and the OOD gate's status",
            ["pipeline", "model", "outcome", "ood"],
            registry=r,
        )
        # Each tile is not audited (a viewer's pan fetches hundreds): the slide's
        # opening is, once per viewer; the tiles are counted here.
        self.deepzoom_tiles = Counter(
            "aidx_deepzoom_tiles_total",
            "DeepZoom tiles sent to the slide viewer",
            registry=r,
        )
        self.wsi_uploads_swept = Counter(
            "aidx_wsi_uploads_swept",
            "Uploaded slides a replica left behind, deleted by the sweep, by reason "
            "(abandoned: no job names it; job_ended)",
            ["reason"],
            registry=r,
        )
        self.model_ready = Gauge(
            "aidx_model_ready", "1 when a model is loaded and warmed", ["model"], registry=r
        )
        self.shadow_latency = Histogram(
            "aidx_shadow_latency_seconds",
            "Compute time per batch a shadow version also ran, of each version (role)",
            ["model", "version", "role"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.shadow_dropped_total = Counter(
            "aidx_shadow_dropped",
            "Served batches the shadow skipped because its queue was full",
            ["model", "serving", "shadow"],
            registry=r,
        )

    def register_model(self, model: str, ready: bool) -> None:
        """Expose a model's series from the start, before its first request."""
        self.model_ready.labels(model).set(int(ready))
        self.queue_depth_gauge.labels(model).set(0)
        for histogram in (self.batch_size, self.queue_wait, self.compute):
            histogram.labels(model)

    def observe_turnaround(self, pipeline: str, stage: str, seconds: float) -> None:
        self.turnaround.labels(pipeline, stage).observe(max(0.0, seconds))

    def report_made(self, report: Report) -> None:
        """Count a new report: the OOD rate is the `ood="out_of_distribution"` share
        (whether the policy withheld the findings or only warned)."""
        outcome = report.not_assessed.reason.value if report.not_assessed else "assessed"
        ood = report.ood.status.value if report.ood is not None else "none"
        self.reports.labels(report.pipeline, report.model.name, outcome, ood).inc()

    # BatchObserver: called twice per request and once per batch, so each model's
    # children are looked up once (labels() validates and locks on every call)
    def queue_depth(self, model: str, depth: int) -> None:
        self._batcher_children(model)[0].set(depth)

    def batch_done(
        self, model: str, size: int, compute_s: float, queue_waits_s: list[float]
    ) -> None:
        _, batch_size, compute, queue_wait = self._batcher_children(model)
        batch_size.observe(size)
        compute.observe(compute_s)
        for wait in queue_waits_s:
            queue_wait.observe(wait)

    def _batcher_children(self, model: str) -> tuple[Gauge, Histogram, Histogram, Histogram]:
        children = self._by_model.get(model)
        if children is None:
            children = self._by_model[model] = (
                self.queue_depth_gauge.labels(model),
                self.batch_size.labels(model),
                self.compute.labels(model),
                self.queue_wait.labels(model),
            )
        return children

    # ShadowObserver (inference/shadow.py)
    def shadow_ran(self, batch: ShadowBatch) -> None:
        for role, version, seconds in (
            ("serving", batch.serving_version, batch.serving_s),
            ("shadow", batch.shadow_version, batch.shadow_s),
        ):
            self.shadow_latency.labels(batch.model, str(version), role).observe(seconds)

    def shadow_dropped(self, model: str, serving: int, shadow: int) -> None:
        self.shadow_dropped_total.labels(model, str(serving), str(shadow)).inc()


class OutboxCollector(Collector):
    """Outbox entries by destination and state, counted in the store at each scrape:
    a growing `build` or `pacs` pending count is the alert that findings reach the
    PACS or the EMR late (or not at all: `failed`)."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, object]]]) -> None:
        self.counts = counts

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "aidx_outbox_entries",
            "Outbox entries by destination and state",
            labels=["destination", "state"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()  # so registering does not query a store not yet migrated

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for destination, entry in self.counts().items():
            for state in ("pending", "delivered", "failed"):
                value = entry.get(state, 0)
                family.add_metric(
                    [destination, state], float(value) if isinstance(value, int) else 0.0
                )
        yield family
