"""A real `aidx serve` process with its MLLP listener on loopback, restartable on the
same store (var dir)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ...conftest import aidx_env, free_port


@dataclass
class LabServer:
    var_dir: Path
    http_port: int
    mllp_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        env = aidx_env(self.var_dir, self.http_port, enabled_models='["labs_anomaly"]',
                       labs_mllp_port=str(self.mllp_port))  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "aidx serve exited during start-up"
            time.sleep(0.2)
        raise TimeoutError("aidx serve did not become ready in 60 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = LabServer(tmp_path_factory.mktemp("labsrv"), free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
