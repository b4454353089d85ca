"""The live alert feed: every connected client gets each new alert as it is stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aidx.pipelines.labs.store import Alert

QUEUE_SIZE = 1000


class Lagged(Exception):
    """The client read too slowly and missed alerts; it reconnects with Last-Event-ID."""


class AlertHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[Alert | None]] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, alerts: Sequence[Alert]) -> None:
        for queue in list(self._subscribers):
            for alert in alerts:
                try:
                    queue.put_nowait(alert)
                except asyncio.QueueFull:
                    self._subscribers.discard(queue)
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    queue.put_nowait(None)  # tell the reader it lagged
                    break

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Alert | None]]:
        queue: asyncio.Queue[Alert | None] = asyncio.Queue(QUEUE_SIZE)
        if self.closed:
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        self.closed = True
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()
