"""The CPU stage: bounded decode/render pool, STAT first."""

from __future__ import annotations

import asyncio
import threading

from aidx.inference.cpu_stage import CpuStage


def test_the_cpu_stage_runs_stat_before_routine_and_bounds_concurrency() -> None:
    order: list[str] = []
    gate = threading.Event()

    def step(name: str) -> str:
        gate.wait(5)
        order.append(name)
        return name

    async def scenario() -> None:
        stage = CpuStage(workers=1)
        stage.start()
        first = asyncio.ensure_future(stage.run(step, "first"))
        await asyncio.sleep(0.05)  # occupies the only worker
        routine = [
            asyncio.ensure_future(stage.run(step, f"routine{i}", priority=2)) for i in range(3)
        ]
        stat = asyncio.ensure_future(stage.run(step, "stat", priority=1))
        await asyncio.sleep(0.05)
        gate.set()
        assert await stat == "stat"
        await asyncio.gather(first, *routine)
        await stage.stop()

    asyncio.run(scenario())
    assert order == ["first", "stat", "routine0", "routine1", "routine2"]
