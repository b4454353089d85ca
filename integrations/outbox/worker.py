"""The outbox worker: claims due entries, delivers each through its destination, and
records the outcome. Failures back off exponentially (base * 2^(attempts-1), capped)
until `max_attempts`, then the entry is dead until someone retries or drops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aidx.inference.settings_sections import OutboxSettings
from aidx.integrations.outbox.destinations import (
    DeliveryError,
    Destination,
    PermanentDeliveryError,
)
from aidx.integrations.outbox.store import Entry, OutboxStore, OutgoingObject

log = logging.getLogger(__name__)
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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def enqueue(self, objects: list[OutgoingObject]) -> int:
        """Store objects durably (before the caller answers), then wake the worker."""
        added = 0
        for obj in objects:
            if obj.destination not in self.destinations:
                raise ValueError(f"no destination {obj.destination!r} is configured")
            added += await asyncio.to_thread(self.store.enqueue, obj)
        self._wake.set()
        return added

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                delivered_any = await self.run_once()
            except Exception:  # the store itself failed: keep the worker alive
                log.exception("outbox: a pass failed")
                delivered_any = False
            if not delivered_any:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                self._wake.clear()

    async def run_once(self) -> bool:
        """One pass: deliver every due entry (a batch at a time). True if any was due.
        Each destination's entries go in order in a thread of their own, so a slow
        peer (an EMR taking seconds per bundle) does not hold back the others."""
        entries = await asyncio.to_thread(
            self.store.claim_due, lease_s=self.lease_s, limit=self.batch
        )
        lanes: dict[str, list[Entry]] = {}
        for entry in entries:
            lanes.setdefault(entry.destination, []).append(entry)
        await asyncio.gather(
            *(asyncio.to_thread(self._deliver_in_order, lane) for lane in lanes.values())
        )
        return bool(entries)

    def _deliver_in_order(self, entries: list[Entry]) -> None:
        for entry in entries:
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
