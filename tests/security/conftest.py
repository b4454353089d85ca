"""One real `aidx serve` process for the hostile-input tests: the bounds on heads,
bodies and connections live in uvicorn's protocol and the ASGI stack, so they are
tried over a socket. Short timeouts keep the slow-client tests fast. And one app in
production mode for the access tests (`secured`): the demo CXR and labs models, a low
failed-authentication limit, a STAT policy that leaves out the lab role, and alert
streams that end within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import aidx_env, auth, free_port, make_settings
from ..waiting import wait_serving

TIMEOUT_S = 1  # AIDX_HTTP_BODY_TIMEOUT_S, _HEADER_TIMEOUT_S, _KEEP_ALIVE_TIMEOUT_S here
WSI_LIMIT_BYTES = 1 << 20


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(var_dir: Path, name: str, **settings: str) -> Iterator[Server]:
    """A real `aidx serve` on `var_dir` with further AIDX_* `settings`, answering; its
    output goes to `var_dir`/`name`.log. Stopped on exit (a test may have killed it)."""
    port = free_port()
    log = var_dir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "aidx.service", "serve", "--log-level", "info"],
            env=aidx_env(var_dir, port, **settings), stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    found = Server("127.0.0.1", port, process, log)
    try:
        wait_serving(f"{found.url}/readyz", process, what=f"aidx serve ({name})", timeout_s=300)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=30)


HOSTILE_SETTINGS = {
    "http_body_timeout_s": str(TIMEOUT_S), "http_header_timeout_s": str(TIMEOUT_S),
    "http_keep_alive_timeout_s": str(TIMEOUT_S), "wsi_max_upload_bytes": str(WSI_LIMIT_BYTES),
    "ct_max_compression_ratio": "100",
}  # fmt: skip


@pytest.fixture(scope="session")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The hostile-input server; a module that needs other settings passes them with
    `pytest.mark.parametrize("server", [{...}], indirect=True)` and gets its own."""
    settings: dict[str, str] = getattr(request, "param", HOSTILE_SETTINGS)
    with serving(tmp_path_factory.mktemp("hostile"), "server", **settings) as found:
        yield found


def timed(call):  # type: ignore[no-untyped-def]
    """(the call's result, its seconds)."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def healthz_ms(client: httpx.Client, server: Server) -> float:
    """One /healthz on an open connection (a new client's set-up is not the server's time)."""
    started = time.perf_counter()
    assert client.get(f"{server.url}/healthz", timeout=5).status_code == 200
    return (time.perf_counter() - started) * 1e3


AUTH_FAILURES_MAX = 3


@dataclass
class Secured:
    client: TestClient
    var_dir: Path

    def at(self, host: str) -> TestClient:
        """The same app, called from another client address."""
        return TestClient(self.client.app, client=(host, 40000))

    def audit(self) -> list[dict[str, Any]]:
        lines = (self.var_dir / "audit.log").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    var_dir = tmp_path_factory.mktemp("secured")
    settings = make_settings(
        var_dir,
        enabled_models=["cxr_pneumonia", "labs_anomaly"],
        access_auth_failures_max=AUTH_FAILURES_MAX,
        access_auth_failures_window_s=60,
        access_stat_roles=[Role.radiologist, Role.admin],
        labs_stream_max_s=0.3,  # alert streams end (as EventSource reconnects) at once
        labs_stream_keepalive_s=0.1,
    )
    with TestClient(create_app(settings), client=("10.0.0.1", 40000)) as client:
        yield Secured(client, var_dir)


def cxr(client: TestClient, data: bytes, role: Role = Role.radiologist, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/cxr",
        content=data,
        headers={"Content-Type": "application/dicom", **auth(role), **headers},
    )
