"""A bounded, priority-ordered pool for the CPU-bound steps of pipelines (DICOM
decode, preprocessing, overlay rendering).

Without it every request would start its decode at once: on a busy service the
cores thrash, and a STAT study waits behind every routine one already decoding.
Here at most `workers` steps run at a time, and STAT (priority 1) goes first.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
ROUTINE = 2


class CpuStage:
    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._queue: asyncio.PriorityQueue[tuple[int, int, Callable[[], Any], asyncio.Future[Any]]]
        self._queue = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="aidx-cpu")
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: Any, priority: int | None = None) -> T:
        if not self._tasks:  # not started (e.g. the CLI): run inline in a thread
            return await asyncio.to_thread(fn, *args)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        level = ROUTINE if priority is None else priority
        self._queue.put_nowait((level, next(self._order), lambda: fn(*args), future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, call, future = await self._queue.get()
            if future.cancelled():  # the client gave up while it waited
                continue
            try:
                result = await loop.run_in_executor(self._executor, call)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
