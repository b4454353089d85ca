"""Each destination claims and delivers on its own: a destination whose delivery
blocks holds back none of the others, and the worker's stop waits for the delivery in
hand, gives back what its lane had claimed and leaves no thread behind."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Engine

from aidx.integrations.outbox.store import OutboxStore, State, entry_id
from aidx.integrations.outbox.worker import OutboxWorker

from ...waiting import wait_until, wait_until_async
from .conftest import obj

LET_GO_AFTER_S = 0.3  # stop must still be waiting then


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, entry: object) -> None:
        self.delivered.append(entry.object_key)  # type: ignore[attr-defined]


class Blocking(Recorder):
    """A peer that takes each delivery until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.let_go = threading.Event()

    def deliver(self, entry: object) -> None:
        self.entered.set()
        assert self.let_go.wait(timeout=60)
        super().deliver(entry)


def outbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("outbox")]


async def started_delivering(peer: Blocking) -> None:
    await asyncio.to_thread(wait_until, peer.entered.is_set, what="a delivery to start")


def test_a_blocked_destination_holds_back_no_other(engine: Engine) -> None:
    store = OutboxStore(engine)
    emr, pacs = Blocking(), Recorder()
    # poll_s long: the PACS lane is woken by its own enqueue, not by polling
    worker = OutboxWorker(store, {"emr": emr, "pacs": pacs}, batch=2, poll_s=60)
    keys = [f"1.2.{n}" for n in range(5)]  # three claims of at most two

    async def scenario() -> None:
        worker.start()
        try:
            await worker.enqueue([obj("bundle-1", "emr")])
            await started_delivering(emr)
            await worker.enqueue([obj(key, "pacs") for key in keys])
            await wait_until_async(
                lambda: len(pacs.delivered) == len(keys), what="every PACS object", timeout_s=30
            )
            assert emr.delivered == []  # still in the EMR's hands meanwhile
        finally:
            emr.let_go.set()
            await worker.stop()

    asyncio.run(scenario())
    assert pacs.delivered == keys  # in order within the destination
    assert emr.delivered == ["bundle-1"]
    assert {e.state for e in store.list()} == {State.delivered}
    assert {e.attempts for e in store.list()} == {1}


def test_stop_waits_for_the_delivery_in_hand_and_gives_back_the_rest(engine: Engine) -> None:
    store = OutboxStore(engine)
    emr = Blocking()
    worker = OutboxWorker(store, {"emr": emr}, lease_s=600)
    others = set(outbox_threads())  # other tests' services may still be running

    async def scenario() -> None:
        worker.start()
        await worker.enqueue([obj(f"bundle-{n}", "emr") for n in range(3)])
        await started_delivering(emr)
        asyncio.get_running_loop().call_later(LET_GO_AFTER_S, emr.let_go.set)
        await worker.stop()
        assert emr.delivered == ["bundle-0"]  # stop returned only after it ended

    asyncio.run(scenario())
    assert set(outbox_threads()) - others == set()  # none of this worker's is left
    assert store.get(entry_id("emr", "bundle-0")).state is State.delivered
    # claimed but never tried: due again at once, not after the 600 s lease
    rest = store.claim_due(lease_s=60, limit=10)
    assert sorted(e.object_key for e in rest) == ["bundle-1", "bundle-2"]
    assert {e.attempts for e in rest} == {0}


def test_an_entry_for_a_destination_no_longer_configured_is_a_failed_attempt(
    engine: Engine,
) -> None:
    store = OutboxStore(engine)
    store.enqueue(obj("1.2.3", "ris"))  # queued when a RIS was configured
    store.enqueue(obj("1.2.4", "pacs"))
    pacs = Recorder()
    assert asyncio.run(OutboxWorker(store, {"pacs": pacs}).run_once())
    assert pacs.delivered == ["1.2.4"]
    gone = store.get(entry_id("ris", "1.2.3"))
    assert gone.state is State.pending and gone.attempts == 1
    assert gone.last_error == "no destination 'ris' is configured"


def test_stop_gives_up_waiting_after_its_grace_and_the_late_delivery_still_ends_well(
    engine: Engine,
) -> None:
    store = OutboxStore(engine)
    emr = Blocking()
    worker = OutboxWorker(store, {"emr": emr}, lease_s=600)

    async def scenario() -> None:
        worker.start()
        await worker.enqueue([obj(f"bundle-{n}", "emr") for n in range(3)])
        await started_delivering(emr)
        ended = await asyncio.wait_for(worker.stop(grace_s=0.2), timeout=5)
        assert ended is False and emr.delivered == []  # it did not wait for the peer
        # the service's next start (a new process, or here the same worker) takes over
        worker.start()
        emr.let_go.set()  # the late delivery ends: recorded; its batch's rest given back
        await wait_until_async(
            lambda: len(emr.delivered) == 3, what="every bundle delivered", timeout_s=30
        )
        assert await worker.stop(grace_s=5) is True

    asyncio.run(scenario())
    assert emr.delivered == ["bundle-0", "bundle-1", "bundle-2"]  # each once, in order
    assert {e.state for e in store.list()} == {State.delivered}
