"""The worker's lanes on the real store (SQLite): each destination is delivered beside
the others, up to its own concurrency, leasing only what is in flight; work a
delivery queues (the build step's objects) is taken at once, not at the next poll."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from aidx.inference.schema import outbox
from aidx.inference.store import create_store, init_store
from aidx.integrations.outbox.store import Entry, OutboxStore, OutgoingObject, State
from aidx.integrations.outbox.worker import OutboxWorker

from ...waiting import wait_until_async

pytestmark = pytest.mark.integration
LONG_POLL_S = 60.0  # longer than any test: a delivery that happens was woken, not polled


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    engine = create_store(f"sqlite:///{tmp_path / 'aidx.db'}")
    init_store(engine)
    return engine


def obj(destination: str, key: str) -> OutgoingObject:
    return OutgoingObject(destination, key, "test", "application/octet-stream", b"x", None)


class Gate:
    """A destination whose deliveries wait until released; it counts those in flight."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.delivered: list[str] = []

    def deliver(self, entry: Entry) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.release.wait(timeout=30)
        with self.lock:
            self.in_flight -= 1
            self.delivered.append(entry.object_key)


class Recorder:
    def __init__(self, name: str, then: Callable[[Entry], None] | None = None) -> None:
        self.name = name
        self.delivered: list[str] = []
        self.then = then

    def deliver(self, entry: Entry) -> None:
        self.delivered.append(entry.object_key)
        if self.then is not None:
            self.then(entry)


def leased(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(outbox.c.lease_until > time.time())
        return int(conn.execute(query).scalar_one())


def delivered(store: OutboxStore) -> int:
    return sum(int(c["delivered"]) for c in store.counts().values())  # type: ignore[call-overload]


def run(worker: OutboxWorker, body: Callable[[], object]) -> None:
    async def main() -> None:
        worker.start()
        try:
            await body()  # type: ignore[misc]
        finally:
            await worker.stop()

    asyncio.run(main())


def test_a_stuck_destination_does_not_hold_up_another(engine: Engine) -> None:
    store = OutboxStore(engine)
    slow, fast = Gate("emr"), Recorder("pacs")
    store.enqueue(obj("emr", "bundle-1"))
    for n in range(5):
        store.enqueue(obj("pacs", f"1.2.{n}"))
    worker = OutboxWorker(store, {"emr": slow, "pacs": fast}, poll_s=LONG_POLL_S)

    async def body() -> None:
        await wait_until_async(lambda: len(fast.delivered) == 5, what="the PACS's five")
        assert slow.in_flight == 1 and not slow.delivered  # the EMR is still at its first
        slow.release.set()
        await wait_until_async(lambda: slow.delivered, what="the EMR's bundle")

    run(worker, body)
    assert store.counts()["pacs"]["delivered"] == 5
    assert store.counts()["emr"]["delivered"] == 1


def test_a_lane_delivers_up_to_its_concurrency_and_leases_only_those(engine: Engine) -> None:
    store = OutboxStore(engine)
    pacs, emr = Gate("pacs"), Gate("emr")
    for n in range(10):
        store.enqueue(obj("pacs", f"1.2.{n}"))
        store.enqueue(obj("emr", f"bundle-{n}"))
    worker = OutboxWorker(
        store, {"pacs": pacs, "emr": emr}, poll_s=LONG_POLL_S, concurrency={"pacs": 3}
    )

    async def body() -> None:
        await wait_until_async(lambda: pacs.in_flight == 3 and emr.in_flight == 1,
                               what="three PACS and one EMR delivery in flight")  # fmt: skip
        # A crash now would leave four entries waiting for their lease, not a batch.
        assert leased(engine) == 4
        pacs.release.set()
        emr.release.set()
        await wait_until_async(lambda: delivered(store) == 20, what="all twenty delivered")

    run(worker, body)
    assert pacs.most_in_flight == 3
    assert emr.most_in_flight == 1  # the EMR's default: one at a time
    assert sorted(pacs.delivered) == sorted(f"1.2.{n}" for n in range(10))  # each once
    assert leased(engine) == 0


def test_objects_a_delivery_queues_are_taken_at_once(engine: Engine) -> None:
    """The build step queues a report's objects from the worker's thread: the PACS
    lane, idle with a minute to its next poll, is woken for them."""
    store = OutboxStore(engine)
    pacs = Recorder("pacs")
    build = Recorder("build", then=lambda e: store.enqueue(obj("pacs", f"sr-of-{e.object_key}")))
    store.enqueue(obj("build", "report-1"))
    worker = OutboxWorker(store, {"build": build, "pacs": pacs}, poll_s=LONG_POLL_S)

    async def body() -> None:
        await asyncio.sleep(0.2)  # the PACS lane has claimed nothing and waits
        store.enqueue(obj("build", "report-2"))
        worker.wake()  # as `enqueue` does
        await wait_until_async(lambda: len(pacs.delivered) == 2, what="both reports' SR")

    run(worker, body)
    assert sorted(pacs.delivered) == ["sr-of-report-1", "sr-of-report-2"]
    assert store.counts()["pacs"] == {
        **{s.value: 0 for s in State}, "delivered": 2, "last_error": None, "last_error_at": None
    }  # fmt: skip


def test_an_entry_a_stopped_worker_left_leased_is_delivered_after_the_lease(
    engine: Engine,
) -> None:
    """Stopped (as if killed) mid-delivery: the entry keeps its lease, nothing is lost,
    and the next worker delivers it once the lease runs out."""
    store = OutboxStore(engine)
    stuck = Gate("pacs")
    store.enqueue(obj("pacs", "1.2.3"))
    first = OutboxWorker(store, {"pacs": stuck}, poll_s=LONG_POLL_S, lease_s=0.5)

    async def body() -> None:
        await wait_until_async(lambda: stuck.in_flight == 1, what="the delivery to start")

    run(first, body)
    assert store.counts()["pacs"]["pending"] == 1
    later = Recorder("pacs")
    second = OutboxWorker(store, {"pacs": later}, poll_s=0.05, lease_s=0.5)

    async def redelivered() -> None:
        await wait_until_async(lambda: store.counts()["pacs"]["delivered"] == 1,
                               what="the redelivery", timeout_s=10)  # fmt: skip

    run(second, redelivered)
    stuck.release.set()  # the first worker's thread ends too
    assert later.delivered == ["1.2.3"]
