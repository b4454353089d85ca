"""The outbox worker: claims due entries, delivers each through its destination, and
records the outcome. Failures back off exponentially (base * 2^(attempts-1), capped)
until `max_attempts`, then the entry is dead until someone retries or drops it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aidx.inference.settings_sections import OutboxSettings
from aidx.integrations.outbox.destinations import (
    DeliveryError,
    Destination,
    PermanentDeliveryError,
)
from aidx.integrations.outbox.store import Entry, OutboxStore, OutgoingObject

log = logging.getLogger(__name__)
T = TypeVar("T")
_DEFAULTS = OutboxSettings()  # one default per value: the settings' (AIDX_OUTBOX_*)


@dataclass(frozen=True)
class Backoff:
    base_s: float = _DEFAULTS.backoff_base_s
    max_s: float = _DEFAULTS.backoff_max_s
    max_attempts: int = _DEFAULTS.max_attempts

    def delay_s(self, attempts: int) -> float:
        """Delay after the `attempts`-th failed attempt (1-based)."""
        return float(min(self.max_s, self.base_s * 2 ** max(0, attempts - 1)))


def describe(exc: BaseException) -> str:
    """An error for the outbox's last_error: the type and message, never a payload."""
    text = str(exc).strip().replace("\n", " ")
    if isinstance(exc, DeliveryError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutboxWorker:
    """One lane per destination, the lanes side by side: a slow EMR does not hold up
    the PACS, and the build step's objects flow to both while the next report builds.
    A lane delivers up to its destination's `concurrency` entries at once (default 1:
    in order) and leases only the entries it is delivering, so a crash leaves at most
    that many waiting for their lease. The lanes' blocking work runs in the worker's
    own threads, never in the event loop's default pool that request handlers share."""

    def __init__(
        self,
        store: OutboxStore,
        destinations: Mapping[str, Destination],
        *,
        backoff: Backoff | None = None,
        poll_s: float = _DEFAULTS.poll_s,
        lease_s: float = _DEFAULTS.lease_s,
        batch: int = 16,
        concurrency: Mapping[str, int] | None = None,
        audit: Any = None,
        on_delivered: Callable[[Entry], None] | None = None,
    ) -> None:
        """`concurrency`: deliveries in flight per destination (absent: 1). `batch`: the
        most entries `run_once` claims. `on_delivered` is told of each delivered entry
        (in the worker's thread)."""
        self.store = store
        self.destinations = dict(destinations)
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.batch = batch
        self.concurrency = dict(concurrency or {})
        self.audit = audit  # an AuditLog: each delivery of patient data is recorded
        self.on_delivered = on_delivered
        self._wakes = {name: asyncio.Event() for name in self.destinations}
        self._pool = self._new_pool()
        self._task: asyncio.Task[None] | None = None

    def slots(self, destination: str) -> int:
        return max(1, self.concurrency.get(destination, 1))

    def _new_pool(self) -> ThreadPoolExecutor:
        threads = sum(self.slots(name) for name in self.destinations) + len(self.destinations)
        return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outbox")

    async def _in_thread(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(func, *args, **kwargs))

    async def enqueue(self, objects: list[OutgoingObject]) -> int:
        """Store objects durably (before the caller answers), then wake the worker."""
        added = 0
        for obj in objects:
            if obj.destination not in self.destinations:
                raise ValueError(f"no destination {obj.destination!r} is configured")
            added += await asyncio.to_thread(self.store.enqueue, obj)
        self.wake()
        return added

    def wake(self) -> None:
        for event in self._wakes.values():
            event.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            # A delivery in flight finishes in its thread and records its outcome.
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()

    async def _run(self) -> None:
        await asyncio.gather(*(self._lane(name) for name in self.destinations))

    async def _lane(self, destination: str) -> None:
        """Keep `destination`'s slots busy: claim as many due entries as slots are
        free; claim again when a delivery ends, when woken, or after `poll_s`."""
        wake = self._wakes[destination]
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            wake.set()

        try:
            while True:
                wake.clear()  # before claiming: an enqueue from now on wakes the wait
                for entry in await self._claim(destination, self.slots(destination) - len(running)):
                    task = asyncio.create_task(self._deliver_async(entry))
                    running.add(task)
                    task.add_done_callback(finished)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self.poll_s)
        finally:
            for task in running:
                task.cancel()

    async def _claim(self, destination: str | None, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        try:
            return await self._in_thread(
                self.store.claim_due, lease_s=self.lease_s, limit=limit, destination=destination
            )
        except Exception:  # the store itself failed: keep the worker alive
            log.exception("outbox: claiming due entries failed")
            return []

    async def _deliver_async(self, entry: Entry) -> None:
        try:
            await self._in_thread(self._deliver, entry)
        except Exception:  # recording the outcome failed: the lease runs out, it is redone
            log.exception("outbox: recording a delivery's outcome failed")
        # A delivery may queue follow-on work (the build step queues a report's objects).
        self.wake()

    async def run_once(self) -> bool:
        """One pass: claim up to `batch` due entries and deliver them, each destination's
        up to its `concurrency` at once. True if any was due."""
        entries = await self._claim(None, self.batch)
        by_destination: dict[str, list[Entry]] = {}
        for entry in entries:
            by_destination.setdefault(entry.destination, []).append(entry)

        async def deliver_all(destination: str, queue: list[Entry]) -> None:
            gate = asyncio.Semaphore(self.slots(destination))

            async def one(entry: Entry) -> None:
                async with gate:
                    await self._deliver_async(entry)

            await asyncio.gather(*(one(entry) for entry in queue))

        await asyncio.gather(*(deliver_all(d, q) for d, q in by_destination.items()))
        return bool(entries)

    def _deliver(self, entry: Entry) -> None:
        destination = self.destinations.get(entry.destination)
        if destination is None:
            error = f"no destination {entry.destination!r} is configured"
            self.store.mark_failed_attempt(
                entry.id, error, retry_at=time.time() + self.backoff.max_s
            )
            return
        try:
            destination.deliver(entry)
        except PermanentDeliveryError as exc:
            log.warning("outbox: %s %s refused: %s", entry.destination, entry.id, describe(exc))
            self.store.mark_failed_attempt(entry.id, describe(exc), retry_at=None)
        except Exception as exc:
            attempts = entry.attempts + 1
            retry_at = None
            if attempts < self.backoff.max_attempts:
                retry_at = time.time() + self.backoff.delay_s(attempts)
            log.info(
                "outbox: %s %s attempt %d failed: %s",
                entry.destination,
                entry.id,
                attempts,
                describe(exc),
            )
            self.store.mark_failed_attempt(entry.id, describe(exc), retry_at=retry_at)
        else:
            self.store.mark_delivered(entry.id)
            if self.audit is not None:
                self.audit.record(
                    actor="aidx-outbox",
                    role="system",
                    action="writeback.deliver",
                    resource=f"outbox/{entry.id}",
                    outcome=entry.destination,
                )
            self._tell_delivered(entry)

    def _tell_delivered(self, entry: Entry) -> None:
        if self.on_delivered is None:
            return
        try:
            self.on_delivered(entry)
        except Exception:  # an observer's failure never undoes a delivery
            log.exception("outbox: the delivery observer failed")
