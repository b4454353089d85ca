"""A real `aidx serve` process with its MLLP listener on loopback, restartable on the
same store (var dir)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ...conftest import aidx_env, free_port
from ...waiting import wait_serving


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
        wait_serving(f"{self.url}/readyz", self.process, what="aidx serve", timeout_s=300)

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
