"""Fixtures shared by the service tests: a real `aidx serve` process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from ..conftest import aidx_env, free_port
from ..waiting import wait_serving

AidxServer = Callable[..., str]


@pytest.fixture(scope="module")
def aidx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AidxServer]:
    """Starts a real `aidx serve` on a free local port: `aidx_server(name, timeout_s=120,
    **settings)` (AIDX_* values, as `aidx_env` takes them; `name` names its var folder)
    answers its base URL once /readyz does. Every server started stops with the module."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *, timeout_s: float = 120, **settings: str) -> str:
        port = free_port()
        env = aidx_env(tmp_path_factory.mktemp(name), port, **settings)
        process = subprocess.Popen(
            [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_serving(f"{url}/readyz", process, what="aidx serve", timeout_s=timeout_s)
        return url

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
