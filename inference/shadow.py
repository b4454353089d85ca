"""A candidate version of a model run in shadow beside the serving version.

The serving version's batcher runs a batch; the moment its outputs exist, the batch's
inputs (the very arrays the serving version saw, already preprocessed) and outputs are
offered to the shadow's bounded queue, and the serving results go on to their callers
untouched. A queue that is full drops the batch and counts it: the shadow never waits
on, nor slows, the serving path. One thread of its own, at a lower CPU priority (nice),
runs the shadow version on each batch, compares the two (inference/shadow_compare.py)
and records the comparison. Nothing the shadow says reaches a report, a write-back or
a response: it has no path to them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from aidx.inference.batcher import RunFn
from aidx.inference.repository import ModelEntry
from aidx.inference.shadow_compare import compare, score_view
from aidx.inference.shadow_store import PairSummary, ShadowBatch

log = logging.getLogger(__name__)


class ShadowObserver(Protocol):
    """What a shadow reports as it goes (Prometheus in the service)."""

    def shadow_ran(self, batch: ShadowBatch) -> None: ...

    def shadow_dropped(self, model: str, serving: int, shadow: int) -> None: ...


@dataclass(frozen=True)
class _Offered:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    serving_s: float


def lower_priority(nice: int) -> None:
    """This thread (Linux: nice is per thread) yields the cores to the serving path."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class ShadowRunner:
    """Runs `shadow` (a version entry and its run function) on the batches `serving`
    ran; `record` keeps each comparison (the store), `observer` counts."""

    def __init__(
        self,
        serving: ModelEntry,
        shadow: ModelEntry,
        run: RunFn,
        *,
        queue_size: int = 64,
        nice: int = 10,
        record: Callable[[ShadowBatch], None] | None = None,
        observer: ShadowObserver | None = None,
    ) -> None:
        self.model = serving.name
        self.serving_version = serving.version
        self.shadow_version = shadow.version
        self._batched = serving.max_batch_size > 0
        self._views = (score_view(serving.card), score_view(shadow.card))
        self._run = run
        self._nice = nice
        self._record = record
        self._observer = observer
        self._queue: queue.Queue[_Offered | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._work, name=f"aidx-shadow-{self.model}", daemon=True
        )
        self.dropped = 0
        self.failed = 0
        # since start, in memory; the store keeps every run's
        self.summary = PairSummary(self.serving_version, self.shadow_version)

    def start(self) -> None:
        self._thread.start()

    def tap(self, run: RunFn) -> RunFn:
        """The serving run function, offering each batch to the shadow once it is done."""

        def serve_then_offer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            outputs = run(inputs)
            self.offer(inputs, outputs, time.perf_counter() - started)
            return outputs

        return serve_then_offer

    def offer(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], serving_s: float
    ) -> bool:
        """Never blocks: False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(_Offered(inputs, outputs, serving_s))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            if self._observer is not None:
                self._observer.shadow_dropped(self.model, self.serving_version, self.shadow_version)
            return False
        return True

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def drain(self) -> None:
        """Wait until every offered batch is compared (tests, benchmarks, shutdown)."""
        self._queue.join()

    def stop(self) -> None:
        """Discard what waits, then end the thread (blocking: call it off the loop)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
                self._queue.task_done()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _work(self) -> None:
        lower_priority(self._nice)
        while (item := self._queue.get()) is not None:
            try:
                self._compare(item)
            except Exception:  # the shadow's failure is its own: log, count, go on
                with self._lock:
                    self.failed += 1
                log.exception("shadow %s v%d failed on a batch", self.model, self.shadow_version)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _compare(self, item: _Offered) -> None:
        started = time.perf_counter()
        outputs = self._run(item.inputs)
        shadow_s = time.perf_counter() - started
        serving_view, shadow_view = self._views
        labels = (
            compare(serving_view, shadow_view, item.outputs, outputs)
            if serving_view is not None and shadow_view is not None
            else {}
        )
        first = next(iter(item.inputs.values()))
        items = first.shape[0] if self._batched else 1
        batch = ShadowBatch(
            self.model, self.serving_version, self.shadow_version, int(items),
            item.serving_s, shadow_s, labels,
        )  # fmt: skip
        if self._record is not None:
            self._record(batch)
        self._add(batch)
        if self._observer is not None:
            self._observer.shadow_ran(batch)

    def _add(self, batch: ShadowBatch) -> None:
        with self._lock:
            s = self.summary
            s.batches += 1
            s.items += batch.items
            s.serving_s += batch.serving_s
            s.shadow_s += batch.shadow_s
            for name, tally in batch.labels.items():
                s.labels.setdefault(name, type(tally)()).add(tally)

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "serving_version": self.serving_version,
                "shadow_version": self.shadow_version,
                "queue_depth": self.depth,
                "queue_size": self._queue.maxsize,
                "dropped": self.dropped,
                "failed": self.failed,
                "since_start": self.summary.as_dict(),
            }
