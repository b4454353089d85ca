"""The outbox worker: one lane per destination claims that destination's due entries,
delivers them in order, and records each outcome. Failures back off exponentially
(base * 2^(attempts-1), capped) until `max_attempts`, then the entry is dead until
someone retries or drops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
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
_DEFAULTS = OutboxSettings()  # one default per value: the settings' (AIDX_OUTBOX_*)
T = TypeVar("T")
R = TypeVar("R")
UNCONFIGURED = None  # the lane of entries whose destination is no longer configured


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
    def __init__(
        self,
        store: OutboxStore,
        destinations: Mapping[str, Destination],
        *,
        backoff: Backoff | None = None,
        poll_s: float = _DEFAULTS.poll_s,
        lease_s: float = _DEFAULTS.lease_s,
        batch: int = 16,
        audit: Any = None,
        on_delivered: Callable[[Entry], None] | None = None,
    ) -> None:
        """`on_delivered` is told of each delivered entry (in the worker's thread)."""
        self.store = store
        self.destinations = dict(destinations)
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.batch = batch
        self.audit = audit  # an AuditLog: each delivery of patient data is recorded
        self.on_delivered = on_delivered
        # One lane per destination, each claiming and delivering on its own, so a slow
        # peer (an EMR taking seconds per bundle) never holds back another; the lane
        # UNCONFIGURED takes the entries of destinations no longer configured.
        self._wakes: dict[str | None, asyncio.Event] = {
            lane: asyncio.Event() for lane in [*self.destinations, UNCONFIGURED]
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = threading.Event()  # read by the lanes' delivery threads
        self._threads: ThreadPoolExecutor | None = None  # the lanes' own, one each

    async def enqueue(self, objects: list[OutgoingObject]) -> int:
        """Store objects durably (before the caller answers), then wake their lanes."""
        added = 0
        for obj in objects:
            if obj.destination not in self.destinations:
                raise ValueError(f"no destination {obj.destination!r} is configured")
            added += await asyncio.to_thread(self.store.enqueue, obj)
        for destination in {obj.destination for obj in objects}:
            self._wakes[destination].set()
        return added

    def wake(self) -> None:
        """Every lane looks for due entries now (a dead entry retried, say)."""
        for event in self._wakes.values():
            event.set()

    def start(self) -> None:
        if not self._tasks:
            self._threads = ThreadPoolExecutor(len(self._wakes), thread_name_prefix="outbox")
            self._tasks = [
                asyncio.create_task(self._run(lane), name=f"outbox-{lane or 'unconfigured'}")
                for lane in self._wakes
            ]

    async def stop(self, grace_s: float | None = None) -> bool:
        """Every lane ends once the delivery in hand has ended; the entries it had
        claimed but not tried are released for the next worker at once. Past `grace_s`
        (the service's shutdown timeout; None: no limit) stop no longer waits: a
        delivery still in hand keeps its lease, and its entry is claimed again once
        the lease ends (delivery is at least once). True if every lane ended."""
        self._stopping.set()
        self.wake()
        late: set[asyncio.Task[None]] = set()
        try:
            if self._tasks:
                _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            if late:
                log.warning(
                    "outbox: %d lane(s) still delivering after %.0f s; their entries are "
                    "claimed again when their lease ends", len(late), grace_s or 0)  # fmt: skip
                for task in late:
                    task.cancel()
            return not late
        finally:
            self._tasks = []
            if self._threads is not None:  # idle: joined at once; else left to finish
                self._threads.shutdown(wait=not late)
                self._threads = None
            # a new flag for a next start: a late delivery's thread keeps the one it
            # read, still set, and releases its batch's untried entries when it returns
            self._stopping = threading.Event()

    async def _run(self, lane: str | None) -> None:
        wake = self._wakes[lane]
        while not self._stopping.is_set():
            wake.clear()  # a wake-up during the pass is kept for the next wait
            try:
                delivered_any = await self._pass(lane)
            except Exception:  # the store itself failed: keep the lane alive
                log.exception("outbox: a pass failed (%s)", lane or "unconfigured")
                delivered_any = False
            if delivered_any:  # a delivery may have queued others' entries (the build)
                self._wake_others(lane)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self.poll_s)

    def _wake_others(self, lane: str | None) -> None:
        for other, event in self._wakes.items():
            if other != lane:
                event.set()

    async def run_once(self) -> bool:
        """One pass of every lane, side by side: each claims a batch of its own
        destination's due entries and delivers them in order. True if any was due."""
        found = await asyncio.gather(*(self._pass(lane) for lane in self._wakes))
        return any(found)

    async def _pass(self, lane: str | None) -> bool:
        entries = await self._in_thread(self._claim, lane)
        if entries:
            await self._in_thread(self._deliver_in_order, entries)
        return bool(entries)

    def _in_thread(self, call: Callable[[T], R], arg: T) -> Awaitable[R]:
        """`call(arg)` in the lanes' own threads while the worker runs (a blocked
        delivery never takes one of the loop's default threads, which requests use);
        in a default thread for a pass run alone (`run_once`)."""
        if self._threads is None:
            return asyncio.to_thread(call, arg)
        return asyncio.get_running_loop().run_in_executor(self._threads, call, arg)

    def _claim(self, lane: str | None) -> list[Entry]:
        if lane is UNCONFIGURED:
            return self.store.claim_due(
                lease_s=self.lease_s, limit=self.batch, other_than=list(self.destinations)
            )
        return self.store.claim_due(lease_s=self.lease_s, limit=self.batch, destination=lane)

    def _deliver_in_order(self, entries: list[Entry]) -> None:
        stopping = self._stopping  # this start's flag, even if stop gives up waiting
        for done, entry in enumerate(entries):
            if stopping.is_set():
                self.store.release([e.id for e in entries[done:]])
                return
            self._deliver(entry)

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
