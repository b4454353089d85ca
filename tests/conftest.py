"""Shared fixtures: the real demo model repository, real DICOM files, real servers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from aidx.inference.settings import ApiKey, Role, Settings, hash_key
from aidx.service.app import create_app

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__import__("os").environ.get("AIDX_TEST_MODELS", ROOT / "models"))
# at least 32 characters, as the production key policy asks (inference/key_policy.py)
KEYS = {role: f"test-{role.value}-key-0123456789abcdefghijkl" for role in Role}


def auth(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


# The suite's fixtures analyse pydicom-data's real chest CRs, which are out of
# distribution for the synthetic-trained demo model: under the default policy their
# findings are not assessed. The suite runs as a site that chose `warn`, so the
# write-back and route tests keep exercising scored findings; tests of the default
# pass ood_policy="not_assessed" (tests/pipelines/cxr/test_screening.py).
SUITE_OOD_POLICY = "warn"


def make_settings(var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "mode": "production",
        "model_repository": MODELS,
        "var_dir": var_dir,
        "ood_policy": SUITE_OOD_POLICY,
        "api_keys": [
            ApiKey(name=f"{r.value}-1", role=r, key_sha256=hash_key(k)) for r, k in KEYS.items()
        ],
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def aidx_env(var_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a real `aidx serve` process on 127.0.0.1:`port` with the test
    keys; `settings` are further AIDX_* values (e.g. enabled_models='["cxr_pneumonia"]')."""
    keys = [{"name": f"{r.value}-1", "role": r.value, "key_sha256": hash_key(k)}
            for r, k in KEYS.items()]  # fmt: skip
    return {
        **os.environ, "AIDX_MODE": "production", "AIDX_API_KEYS": json.dumps(keys),
        "AIDX_MODEL_REPOSITORY": str(MODELS), "AIDX_VAR_DIR": str(var_dir),
        "AIDX_HOST": "127.0.0.1", "AIDX_PORT": str(port), "AIDX_OOD_POLICY": SUITE_OOD_POLICY,
        **{f"AIDX_{name.upper()}": value for name, value in settings.items()},
    }  # fmt: skip


def dicom_bytes(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is missing (pip install pydicom-data)"
    return Path(path).read_bytes()


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def client(var_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(var_dir))) as test_client:
        yield test_client


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    http: str  # host:port of HTTP (/v1, /v2)
    grpc: str  # host:port of KServe v2 over gRPC


@pytest.fixture(scope="session")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real `aidx serve` process on loopback, HTTP and gRPC, for clients that need
    a socket."""
    import subprocess
    import sys

    from .waiting import wait_serving

    port, grpc_port = free_port(), free_port()
    env = aidx_env(tmp_path_factory.mktemp("srv"), port, grpc_port=str(grpc_port))
    process = subprocess.Popen(
        [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
    )
    url = f"127.0.0.1:{port}"
    try:
        wait_serving(f"http://{url}/readyz", process, what="aidx serve")
        yield LiveServer(http=url, grpc=f"127.0.0.1:{grpc_port}")
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def live_server(live_servers: LiveServer) -> str:
    """host:port of the real `aidx serve` process's HTTP."""
    return live_servers.http
