"""Dynamic batcher with Triton's semantics; it knows nothing of images or labs.

Per model: a bounded queue per priority level (1 = highest, as in Triton's
`priority_levels`), `instance_count` executors. A batch is cut as soon as a full
batch (`max_batch_size`) of shape-compatible requests is queued, or when the oldest
queued request has waited `max_queue_delay_us`. The gathered requests' inputs are
concatenated along axis 0, run once, and the outputs are split back by each
request's own batch size, checking that the sizes add up (PyTriton's `@batch`).

One addition to Triton's rules: where config.pbtxt names no `preferred_batch_size`,
batches are capped at the knee of the model's own batch curve as measured while it
serves (inference/batch_knee.py), never above `max_batch_size`; `cut_at_knee=False`
cuts at the maximum exactly as Triton does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from aidx.inference.batch_knee import BatchKnee
from aidx.inference.errors import AidxError, BadRequest, DeadlineExceeded, QueueFull

Tensors = Mapping[str, np.ndarray]
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class BatchSizeMismatch(AidxError):
    code = "batch_size_mismatch"


class BatchObserver(Protocol):
    """What the batcher reports (Prometheus in the service, nothing in tests)."""

    def queue_depth(self, model: str, depth: int) -> None: ...

    def batch_done(
        self, model: str, size: int, compute_s: float, queue_waits_s: list[float]
    ) -> None: ...


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int = 8  # 0: the model takes no batch dimension; one request a run
    max_queue_delay_us: int = 1000
    max_queue_size: int = 128  # requests waiting, all priorities together
    priority_levels: int = 2
    default_priority: int = 2
    instance_count: int = 1
    # Triton's preferred_batch_size: cut a batch as soon as one of these sizes can form
    # (e.g. where a CPU model is most efficient), instead of waiting for the maximum.
    preferred_batch_sizes: tuple[int, ...] = ()
    # With no preferred sizes: cap batches where bigger ones stopped being cheaper per
    # item on this machine (batch_knee.py), instead of always filling the maximum.
    cut_at_knee: bool = True


@dataclass(frozen=True)
class BatchResult:
    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    batch_size: int  # size of the whole batch this request ran in


@dataclass(eq=False)
class _Pending:
    inputs: dict[str, np.ndarray]
    size: int
    signature: tuple[tuple[str, str, tuple[int, ...]], ...]
    enqueued_at: float
    deadline: float | None
    future: asyncio.Future[BatchResult] = field(repr=False)


def _signature(inputs: Tensors, batched: bool) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """Requests can share a batch only if every input matches beyond axis 0 (dtypes by
    their `.str`, '<f4': str(dtype) runs Python code in numpy 2, on every request)."""
    return tuple(
        (name, arr.dtype.str, tuple(arr.shape[1:] if batched else arr.shape))
        for name, arr in sorted(inputs.items())
    )


def _request_size(inputs: Tensors, batched: bool) -> int:
    if not inputs:
        raise BadRequest("an inference request needs at least one input", code="no_inputs")
    if not batched:
        return 1
    sizes = {arr.shape[0] if arr.ndim else -1 for arr in inputs.values()}
    if len(sizes) != 1 or min(sizes) < 1:
        raise BadRequest(
            "every input must have the same batch size (axis 0) of at least 1",
            code="inconsistent_batch_size",
        )
    return sizes.pop()


class DynamicBatcher:
    def __init__(
        self,
        model: str,
        run: RunFn,
        config: BatcherConfig,
        observer: BatchObserver | None = None,
    ) -> None:
        if not 1 <= config.default_priority <= config.priority_levels:
            raise ValueError("default_priority must lie in 1..priority_levels")
        self.model = model
        self.config = config
        self._run = run
        self._observer = observer
        self._queues: list[deque[_Pending]] = [deque() for _ in range(config.priority_levels)]
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(
            max_workers=config.instance_count, thread_name_prefix=f"aidx-{model}"
        )
        self._mean_compute_s = 0.05
        self.batches_run = 0
        self.knee: BatchKnee | None = None
        if config.cut_at_knee and config.max_batch_size > 1 and not config.preferred_batch_sizes:
            self.knee = BatchKnee(config.max_batch_size)

    @property
    def batched(self) -> bool:
        return self.config.max_batch_size > 0

    @property
    def batch_limit(self) -> int:
        """The largest batch the next cut may take: the knee's cap or the maximum."""
        return self.knee.limit() if self.knee is not None else self.config.max_batch_size

    @property
    def depth(self) -> int:
        return sum(len(q) for q in self._queues)

    def start(self) -> None:
        for i in range(self.config.instance_count):
            self._workers.append(asyncio.create_task(self._worker(), name=f"{self.model}-{i}"))

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        for queue in self._queues:
            while queue:
                pending = queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(DeadlineExceeded("the service is stopping"))
        self._executor.shutdown(wait=True)

    async def infer(
        self, inputs: Tensors, *, priority: int | None = None, timeout_s: float | None = None
    ) -> BatchResult:
        """Queue one request and wait for its share of a batch's outputs."""
        pending = self._enqueue(inputs, priority, timeout_s)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            self._withdraw(pending)
            raise DeadlineExceeded(
                f"no result from {self.model} within the deadline of {timeout_s or 0:.3f} s",
                model=self.model,
            ) from None
        except asyncio.CancelledError:  # the caller went away (gRPC cancel, HTTP disconnect)
            self._withdraw(pending)
            raise

    def _withdraw(self, pending: _Pending) -> None:
        """Forget a request nobody waits for any more. Cancelling its future makes a
        running batch drop its share of the outputs; taking it out of its queue now (not
        at the next cut) keeps it out of the depth, the queue-full check and the batch
        the worker cuts next."""
        pending.future.cancel()
        for queue in self._queues:
            if pending in queue:
                queue.remove(pending)
                self._report_depth()
                return

    def _enqueue(self, inputs: Tensors, priority: int | None, timeout_s: float | None) -> _Pending:
        level = self.config.default_priority if priority is None else int(priority)
        if not 1 <= level <= self.config.priority_levels:
            raise BadRequest(
                f"priority must be 1..{self.config.priority_levels} (1 is highest)",
                code="invalid_priority",
            )
        size = _request_size(inputs, self.batched)
        if self.batched and size > self.config.max_batch_size:
            raise BadRequest(
                f"batch of {size} exceeds {self.model}'s max_batch_size "
                f"{self.config.max_batch_size}",
                code="batch_too_large",
            )
        if self.depth >= self.config.max_queue_size:
            raise QueueFull(
                f"{self.model}'s queue is full ({self.depth} requests waiting)",
                retry_after_s=self._retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = _Pending(
            inputs=dict(inputs),
            size=size,
            signature=_signature(inputs, self.batched),
            enqueued_at=now,
            deadline=None if timeout_s is None else now + timeout_s,
            future=loop.create_future(),
        )
        self._queues[level - 1].append(pending)
        self._report_depth()
        self._wakeup.set()
        return pending

    def _retry_after_s(self) -> int:
        batches_ahead = self.depth / max(self.config.max_batch_size, 1)
        seconds = batches_ahead * self._mean_compute_s / self.config.instance_count
        return max(1, min(60, math.ceil(seconds)))

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self.model, self.depth)

    def _drop_dead(self, now: float) -> None:
        for queue in self._queues:
            live = [p for p in queue if not p.future.done()]
            for p in live:
                if p.deadline is not None and now >= p.deadline:
                    p.future.set_exception(
                        DeadlineExceeded("deadline passed while queued", model=self.model)
                    )
            queue.clear()
            queue.extend(p for p in live if not p.future.done())

    def _head(self) -> _Pending | None:
        """The oldest request of the highest priority that has one."""
        return next((q[0] for q in self._queues if q), None)

    def _oldest_enqueue_time(self) -> float:
        return min(q[0].enqueued_at for q in self._queues if q)

    def _compatible_size(self, head: _Pending) -> int:
        return sum(p.size for q in self._queues for p in q if p.signature == head.signature)

    def _take(self, head: _Pending, limit: int) -> list[_Pending]:
        """Cut a batch: priority order, FIFO within a level, same signature, <= limit.
        The head always goes: a request larger than a preferred size or the knee's cap
        (a slide's chunk of 16 tiles, say) runs alone or with what fits beside it."""
        taken: list[_Pending] = []
        total = 0
        limit = max(limit, head.size)
        for queue in self._queues:
            for p in list(queue):
                if p.signature == head.signature and total + p.size <= limit:
                    queue.remove(p)
                    taken.append(p)
                    total += p.size
        self._report_depth()
        return taken

    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._drop_dead(now)
            head = self._head()
            if head is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self.batched:
                return self._take(head, 1)
            available = self._compatible_size(head)
            limit = self.batch_limit
            preferred = [n for n in self.config.preferred_batch_sizes if n <= available]
            if preferred:  # Triton: a preferred size wins over the maximum
                return self._take(head, max(preferred))
            if available >= limit:
                return self._take(head, limit)
            wait_s = self._oldest_enqueue_time() + self.config.max_queue_delay_us / 1e6 - now
            if wait_s <= 0:
                return self._take(head, limit)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait_s)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()  # never empty: the head always goes
            started = loop.time()
            try:
                outputs, compute_s = await loop.run_in_executor(
                    self._executor, self._run_batch, batch
                )
            except Exception as exc:  # the model failed: fail these requests, keep serving
                error = (
                    exc
                    if isinstance(exc, AidxError)
                    else AidxError(
                        f"{self.model} failed to run a batch: {type(exc).__name__}",
                        code="model_execution_failed",
                    )
                )
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            self._deliver(batch, outputs, started, compute_s)

    def _run_batch(self, batch: list[_Pending]) -> tuple[list[dict[str, np.ndarray]], float]:
        names = batch[0].inputs.keys()
        if self.batched:
            merged = {n: np.concatenate([p.inputs[n] for p in batch], axis=0) for n in names}
        else:
            merged = batch[0].inputs
        t0 = time.perf_counter()
        outputs = self._run(merged)
        compute_s = time.perf_counter() - t0
        return self._split(batch, outputs), compute_s

    def _split(
        self, batch: list[_Pending], outputs: dict[str, np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        if not self.batched:
            return [outputs]
        total = sum(p.size for p in batch)
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise BatchSizeMismatch(
                    f"{self.model} returned {name} with leading size "
                    f"{arr.shape[0] if arr.ndim else 'scalar'} for a batch of {total}"
                )
        bounds = list(itertools.accumulate(p.size for p in batch))[:-1]
        pieces = {name: np.split(arr, bounds, axis=0) for name, arr in outputs.items()}
        return [{name: pieces[name][i] for name in outputs} for i in range(len(batch))]

    def _deliver(
        self,
        batch: list[_Pending],
        outputs: list[dict[str, np.ndarray]],
        started: float,
        compute_s: float,
    ) -> None:
        size = sum(p.size for p in batch)
        waits = [started - p.enqueued_at for p in batch]
        self._mean_compute_s = 0.8 * self._mean_compute_s + 0.2 * compute_s
        self.batches_run += 1
        if self.knee is not None:
            self.knee.observe(size, compute_s)
        for p, out, wait in zip(batch, outputs, waits, strict=True):
            if not p.future.done():
                p.future.set_result(BatchResult(out, wait, compute_s, size))
        if self._observer is not None:
            self._observer.batch_done(self.model, size, compute_s, waits)
