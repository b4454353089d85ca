"""The CPU stage: bounded decode/render pool, STAT first."""

from __future__ import annotations

import asyncio
import threading

from aidx.inference.cpu_stage import CpuStage

from ..waiting import wait_until_async


def test_the_cpu_stage_runs_stat_before_routine_and_bounds_concurrency() -> None:
    order: list[str] = []
    gate = threading.Event()
    entered = threading.Event()

    def step(name: str) -> str:
        entered.set()
        gate.wait(5)
        order.append(name)
        return name

    async def scenario() -> None:
        stage = CpuStage(workers=1)
        stage.start()
        first = asyncio.ensure_future(stage.run(step, "first"))
        await wait_until_async(entered.is_set, what="the first step on the only worker")
        routine = [
            asyncio.ensure_future(stage.run(step, f"routine{i}", priority=2)) for i in range(3)
        ]
        stat = asyncio.ensure_future(stage.run(step, "stat", priority=1))
        # the stage's own queue: the four are waiting before the worker is let go
        await wait_until_async(lambda: stage._queue.qsize() == 4, what="four steps queued")
        gate.set()
        assert await stat == "stat"
        await asyncio.gather(first, *routine)
        await stage.stop()

    asyncio.run(scenario())
    assert order == ["first", "stat", "routine0", "routine1", "routine2"]
