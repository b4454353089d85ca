"""The dynamic batcher's contract, with a plain function as the model."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import numpy as np
import pytest

from aidx.inference.batcher import BatcherConfig, BatchResult, DynamicBatcher
from aidx.inference.errors import AidxError, BadRequest, DeadlineExceeded, QueueFull
from aidx.service.handlers import http_status

from ..waiting import wait_until_async


class Recorder:
    """A model that doubles its input and records each batch it ran; with a gate, each
    run holds the executor until the test opens it, and `entered` says one has begun."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[float]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        x = inputs["x"]
        self.batches.append(x[:, 0].tolist())
        return {"y": x * 2}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def one(value: float, n: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 3), value, np.float32)}


def test_sixteen_concurrent_requests_with_max_batch_8_run_in_at_most_3_batches() -> None:
    model = Recorder()

    async def scenario() -> list:
        batcher = DynamicBatcher(
            "m", model, BatcherConfig(max_batch_size=8, max_queue_delay_us=50_000)
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.infer(one(i)) for i in range(16)))
        await batcher.stop()
        return results

    results = run(scenario())
    assert len(model.batches) <= 3
    assert sum(len(b) for b in model.batches) == 16
    for i, result in enumerate(results):  # each request gets its own rows back
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 3), 2.0 * i))
    assert max(r.batch_size for r in results) == 8


def test_requests_of_several_rows_are_split_back_by_their_own_size() -> None:
    model = Recorder()

    async def scenario() -> list:
        batcher = DynamicBatcher(
            "m", model, BatcherConfig(max_batch_size=8, max_queue_delay_us=20_000)
        )
        batcher.start()
        results = await asyncio.gather(batcher.infer(one(1, 3)), batcher.infer(one(2, 5)))
        await batcher.stop()
        return results

    first, second = run(scenario())
    assert first.outputs["y"].shape == (3, 3) and second.outputs["y"].shape == (5, 3)
    assert (first.outputs["y"] == 2).all() and (second.outputs["y"] == 4).all()
    assert model.batches == [[1, 1, 1, 2, 2, 2, 2, 2]]


def test_a_lone_request_waits_at_most_the_queue_delay() -> None:
    async def scenario() -> float:
        batcher = DynamicBatcher(
            "m", Recorder(), BatcherConfig(max_batch_size=8, max_queue_delay_us=30_000)
        )
        batcher.start()
        t0 = time.perf_counter()
        await batcher.infer(one(1))
        elapsed = time.perf_counter() - t0
        await batcher.stop()
        return elapsed

    assert 0.025 <= run(scenario()) < 0.5


def test_full_queue_answers_429_with_retry_after() -> None:
    gate = threading.Event()

    async def scenario() -> QueueFull:
        config = BatcherConfig(max_batch_size=1, max_queue_delay_us=0, max_queue_size=2)
        model = Recorder(gate=gate)
        batcher = DynamicBatcher("m", model, config)
        batcher.start()
        running = asyncio.ensure_future(batcher.infer(one(0)))  # occupies the executor
        await wait_until_async(model.entered.is_set, what="the first request to run")
        queued = [asyncio.ensure_future(batcher.infer(one(i))) for i in (1, 2)]
        await wait_until_async(lambda: batcher.depth == 2, what="two requests queued")
        with pytest.raises(QueueFull) as caught:
            await batcher.infer(one(3))
        gate.set()
        await asyncio.gather(running, *queued)
        await batcher.stop()
        return caught.value

    error = run(scenario())
    assert http_status(error) == 429 and error.code == "queue_full"
    assert int(error.headers["Retry-After"]) >= 1


def test_a_request_past_its_deadline_is_answered_504_and_never_run() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def scenario() -> DeadlineExceeded:
        batcher = DynamicBatcher("m", model, BatcherConfig(max_batch_size=1, max_queue_delay_us=0))
        batcher.start()
        blocker = asyncio.ensure_future(batcher.infer(one(0)))
        await wait_until_async(model.entered.is_set, what="the blocker to run")
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceeded) as caught:
            await batcher.infer(one(99), timeout_s=0.1)
        assert time.perf_counter() - t0 < 0.5
        gate.set()
        await blocker
        # One request at a time, in order: had 99 stayed queued, it would run before 100.
        await batcher.infer(one(100))
        await batcher.stop()
        return caught.value

    error = run(scenario())
    assert http_status(error) == 504 and error.code == "deadline_exceeded"
    assert [99.0] not in model.batches  # dropped, not computed


def test_stat_overtakes_routine() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def scenario() -> None:
        batcher = DynamicBatcher("m", model, BatcherConfig(max_batch_size=1, max_queue_delay_us=0))
        batcher.start()
        blocker = asyncio.ensure_future(batcher.infer(one(0)))
        await wait_until_async(model.entered.is_set, what="the blocker to run")
        routine = [asyncio.ensure_future(batcher.infer(one(i), priority=2)) for i in (1, 2, 3)]
        await wait_until_async(lambda: batcher.depth == 3, what="three routine requests")
        stat = asyncio.ensure_future(batcher.infer(one(9), priority=1))
        await wait_until_async(lambda: batcher.depth == 4, what="the STAT request queued")
        gate.set()
        await asyncio.gather(blocker, stat, *routine)
        await batcher.stop()

    run(scenario())
    assert model.batches == [[0], [9], [1], [2], [3]]


def test_inputs_of_other_shapes_are_not_merged() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(
            "m", model, BatcherConfig(max_batch_size=8, max_queue_delay_us=20_000)
        )
        batcher.start()
        wide = {"x": np.ones((1, 5), np.float32)}
        results = await asyncio.gather(
            batcher.infer(one(1)), batcher.infer(wide), batcher.infer(one(2))
        )
        assert results[1].outputs["y"].shape == (1, 5)
        await batcher.stop()

    run(scenario())
    assert sorted(len(b) for b in model.batches) == [1, 2]


def test_a_model_that_breaks_the_batch_contract_fails_its_requests_and_serving_goes_on() -> None:
    calls = {"n": 0}

    def flaky(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            return {"y": inputs["x"][:1]}  # drops rows: sizes no longer add up
        if calls["n"] == 2:
            raise RuntimeError("kernel failed")
        return {"y": inputs["x"]}

    async def scenario() -> None:
        batcher = DynamicBatcher(
            "m", flaky, BatcherConfig(max_batch_size=4, max_queue_delay_us=20_000)
        )
        batcher.start()
        mismatch = await asyncio.gather(
            batcher.infer(one(1)), batcher.infer(one(2)), return_exceptions=True
        )
        assert all(isinstance(e, AidxError) and e.code == "batch_size_mismatch" for e in mismatch)
        with pytest.raises(AidxError) as failed:
            await batcher.infer(one(3))
        assert failed.value.code == "model_execution_failed"
        ok = await batcher.infer(one(4))
        assert (ok.outputs["y"] == 4).all()
        await batcher.stop()

    run(scenario())


def test_oversized_and_inconsistent_requests_are_refused() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher("m", Recorder(), BatcherConfig(max_batch_size=4))
        with pytest.raises(BadRequest, match="max_batch_size"):
            await batcher.infer(one(1, 5))
        with pytest.raises(BadRequest) as caught:
            await batcher.infer({"x": np.ones((2, 3)), "z": np.ones((3, 3))})
        assert caught.value.code == "inconsistent_batch_size"
        with pytest.raises(BadRequest):
            await batcher.infer(one(1), priority=3)
        await batcher.stop()

    run(scenario())


def test_a_preferred_batch_size_is_cut_without_waiting_for_the_maximum() -> None:
    model = Recorder()

    async def scenario() -> None:
        config = BatcherConfig(
            max_batch_size=32, max_queue_delay_us=2_000_000, preferred_batch_sizes=(4,)
        )
        batcher = DynamicBatcher("m", model, config)
        batcher.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(batcher.infer(one(i)) for i in range(8)))
        assert time.perf_counter() - t0 < 1.0  # never waited out the 2 s delay
        await batcher.stop()

    run(scenario())
    assert [len(b) for b in model.batches] == [4, 4]


class DepthLog:
    """An observer that keeps each queue depth the batcher reports."""

    def __init__(self) -> None:
        self.depths: list[int] = []

    def queue_depth(self, model: str, depth: int) -> None:
        self.depths.append(depth)

    def batch_done(
        self, model: str, size: int, compute_s: float, queue_waits_s: list[float]
    ) -> None:
        pass


def collect_loop_errors() -> list[dict]:
    """What the running loop would log: an InvalidStateError in a callback, a future's
    exception never retrieved (collected before the loop closes, to be seen)."""
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


def test_a_cancelled_request_leaves_the_queue_at_once_and_is_never_run() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)
    depths = DepthLog()

    async def scenario() -> list[BatchResult]:
        errors = collect_loop_errors()
        config = BatcherConfig(max_batch_size=8, max_queue_delay_us=0, cut_at_knee=False)
        batcher = DynamicBatcher("m", model, config, observer=depths)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.infer(one(0)))
        await wait_until_async(model.entered.is_set, what="the blocker to run")
        waiting = {i: asyncio.ensure_future(batcher.infer(one(i))) for i in range(1, 7)}
        await wait_until_async(lambda: batcher.depth == 6, what="six requests queued")
        gone = [waiting.pop(i) for i in (2, 4, 6)]  # their callers went away
        for task in gone:
            task.cancel()
        for task in gone:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert batcher.depth == 3 and depths.depths[-1] == 3  # not counted while the model runs
        gate.set()
        kept = await asyncio.gather(blocker, *waiting.values())
        await batcher.stop()
        gc.collect()
        assert errors == []
        return kept

    kept = run(scenario())
    assert model.batches == [[0], [1, 3, 5]]
    for value, result in zip((0, 1, 3, 5), kept, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 3), 2.0 * value))


def test_a_request_cancelled_while_its_batch_runs_is_dropped_and_serving_goes_on() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def scenario() -> None:
        errors = collect_loop_errors()
        batcher = DynamicBatcher("m", model, BatcherConfig(max_batch_size=1, max_queue_delay_us=0))
        batcher.start()
        gone = asyncio.ensure_future(batcher.infer(one(1)))
        await wait_until_async(model.entered.is_set, what="its batch to run")
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.set()
        after = await batcher.infer(one(2), timeout_s=5)  # the worker outlived the drop
        assert (after.outputs["y"] == 4).all()
        await batcher.stop()
        gc.collect()
        assert errors == []

    run(scenario())
    assert model.batches == [[1], [2]]
