"""The batcher caps its batches at the knee of the model's measured batch curve."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from aidx.inference.batcher import BatcherConfig, DynamicBatcher


class KneeAtFour:
    """A model that costs 3 ms an item up to 4 items and 8 ms an item beyond (as a
    large model on a CPU whose activations outgrow the cache); records batch sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["x"])
        self.sizes.append(n)
        time.sleep(n * (0.003 if n <= 4 else 0.008))
        return {"y": inputs["x"] * 2}


def one(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, np.float32)}


async def rounds(batcher: DynamicBatcher, requests: int, times: int) -> None:
    for _ in range(times):
        results = await asyncio.gather(*(batcher.infer(one(i)) for i in range(requests)))
        for i, result in enumerate(results):
            assert result.outputs["y"][0, 0] == 2 * i


def learn_then_serve(config: BatcherConfig) -> tuple[DynamicBatcher, list[int]]:
    """Rounds of 4 then of 16 requests measure both ends of the curve; returns the
    batch sizes of 4 more rounds of 16."""
    model = KneeAtFour()

    async def scenario() -> DynamicBatcher:
        batcher = DynamicBatcher("m", model, config)
        batcher.start()
        await rounds(batcher, 4, 3)
        await rounds(batcher, 16, 3)
        model.sizes.clear()
        await rounds(batcher, 16, 4)
        await batcher.stop()
        return batcher

    return asyncio.run(scenario()), model.sizes


def test_once_bigger_batches_measure_dearer_per_item_batches_stop_at_the_knee() -> None:
    batcher, sizes = learn_then_serve(BatcherConfig(max_batch_size=16, max_queue_delay_us=5000))
    assert batcher.knee is not None and batcher.knee.knee() == 4
    assert sum(sizes) == 64
    assert max(sizes) <= 8  # now and then one reaches the next group up, to keep measuring
    assert sizes.count(4) >= 12


def test_without_cut_at_knee_batches_fill_the_maximum_as_in_triton() -> None:
    config = BatcherConfig(max_batch_size=16, max_queue_delay_us=5000, cut_at_knee=False)
    batcher, sizes = learn_then_serve(config)
    assert batcher.knee is None
    assert sizes == [16, 16, 16, 16]


def test_preferred_sizes_from_the_config_win_over_the_measured_knee() -> None:
    config = BatcherConfig(max_batch_size=16, max_queue_delay_us=5000, preferred_batch_sizes=(8,))
    batcher, sizes = learn_then_serve(config)
    assert batcher.knee is None
    assert sizes == [8] * 8


def test_a_model_that_gains_from_every_batch_size_is_never_capped() -> None:
    def cheaper_in_bulk(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.004 + 0.0005 * len(inputs["x"]))  # a fixed cost per run dominates
        return {"y": inputs["x"] * 2}

    async def scenario() -> DynamicBatcher:
        batcher = DynamicBatcher(
            "m", cheaper_in_bulk, BatcherConfig(max_batch_size=16, max_queue_delay_us=5000)
        )
        batcher.start()
        await rounds(batcher, 4, 3)
        await rounds(batcher, 16, 3)
        await batcher.stop()
        return batcher

    batcher = asyncio.run(scenario())
    assert batcher.knee is not None and batcher.knee.knee() is None
    assert batcher.batch_limit == 16


def test_a_request_larger_than_the_knee_still_runs() -> None:
    """A request of 8 items (a slide's chunk of tiles) once the knee caps batches at 4:
    it runs (alone), never waits forever for a batch it cannot fit in."""
    model = KneeAtFour()
    config = BatcherConfig(max_batch_size=16, max_queue_delay_us=5000)

    async def scenario() -> None:
        batcher = DynamicBatcher("m", model, config)
        batcher.start()
        await rounds(batcher, 4, 3)
        await rounds(batcher, 16, 3)
        assert batcher.knee is not None and batcher.knee.knee() == 4
        chunk = {"x": np.arange(24, dtype=np.float32).reshape(8, 3)}
        result = await asyncio.wait_for(batcher.infer(chunk), timeout=10)
        assert np.array_equal(result.outputs["y"], chunk["x"] * 2)
        await batcher.stop()

    asyncio.run(scenario())


def test_a_request_larger_than_a_preferred_size_still_runs() -> None:
    config = BatcherConfig(max_batch_size=16, max_queue_delay_us=5000, preferred_batch_sizes=(4,))

    async def scenario() -> None:
        batcher = DynamicBatcher("m", KneeAtFour(), config)
        batcher.start()
        chunk = {"x": np.arange(24, dtype=np.float32).reshape(8, 3)}
        result = await asyncio.wait_for(batcher.infer(chunk), timeout=10)
        assert result.batch_size == 8 and np.array_equal(result.outputs["y"], chunk["x"] * 2)
        await batcher.stop()

    asyncio.run(scenario())
