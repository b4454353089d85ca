"""Waiting for what a test needs to have happened, with a deadline, instead of sleeping
for a guessed time: the test goes on as soon as the condition holds, and fails naming
what it waited for when the condition never holds."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")
POLL_S = 0.05


def wait_until(predicate: Callable[[], T], *, what: str, timeout_s: float = 30.0) -> T:
    """The predicate's first truthy value, asked every POLL_S until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)
    return value


async def wait_until_async(predicate: Callable[[], T], *, what: str, timeout_s: float = 5.0) -> T:
    """wait_until inside an event loop: the loop's other tasks run between the asks."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.001)
    return value


def wait_serving(
    url: str, process: subprocess.Popen[bytes], *, what: str, timeout_s: float = 120.0
) -> None:
    """Until GET `url` answers 200; fails at once if `process` exits meanwhile. The
    deadline is generous: a loaded CI machine can take a minute to import aidx."""

    def answers() -> bool:
        assert process.poll() is None, f"{what} exited during start-up (rc {process.returncode})"
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, what=f"{what} to answer {url}", timeout_s=timeout_s)
