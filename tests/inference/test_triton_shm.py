"""AIDX_TRITON_SHARED_MEMORY against a real NVIDIA Triton server (the PyTriton peer of
test_triton_peer.py) on this host, where system shared memory really works.

PyTriton restricts Triton's shared-memory API behind an access token; the peer here
has a known one (guarding metadata, config and inference too) and aidx sends it
(AIDX_TRITON_HEADERS), as it would to any Triton that restricts that API. What the
server knows is read through tritonclient's own status call; what this host has, from
/dev/shm. A region's contents are read back with tritonclient's shared_memory
utilities, to show that the tensors went that way and not in the request body.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from fastapi.testclient import TestClient
from tritonclient.utils import shared_memory as shm

from aidx.inference.repository import load_entry
from aidx.inference.runtime_triton import TritonModel, TritonOptions
from aidx.inference.settings import Role, Settings
from aidx.inference.settings_sections import TritonProtocol
from aidx.inference.triton_shm import TritonSharedMemoryUnusable, region_layout
from aidx.service.app import create_app

from ..conftest import MODELS, aidx_env, auth, free_port, make_settings
from ..peers.triton import TritonPeer, private_shm_missing, running, serving
from ..waiting import wait_serving, wait_until
from .reference import (
    cxr,
    in_process_findings,
    kserve_json,
    reference,
    same_findings,
    v2_matches_onnxruntime,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "cxr_pneumonia"
TOKEN = "shm-peer-key-0123456789"
SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def triton_peer() -> Iterator[TritonPeer]:
    with serving(TritonPeer(MODELS, only=[MODEL], access_token=TOKEN)) as peer:
        yield peer


@pytest.fixture
def triton(triton_peer: TritonPeer) -> TritonPeer:
    return running(triton_peer)


def region_names(settings: Settings) -> str:
    """The prefix of the model's shared-memory regions on the server."""
    options = TritonOptions.from_settings(settings.triton, port=settings.port)
    return f"{options.region_prefix}-{MODEL}"


def headers(peer: TritonPeer, protocol: TritonProtocol) -> dict[str, str]:
    """The peer's token as each protocol carries it (gRPC: a prefixed metadata key)."""
    if protocol is TritonProtocol.http:
        return peer.headers
    return {"triton-grpc-protocol-triton-access-token": TOKEN}


def shm_settings(var_dir: Path, peer: TritonPeer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "enabled_models": [MODEL],
        "writeback": False,
        "backend": "triton",
        "triton_url": peer.url,
        "triton_headers": peer.headers,
        "triton_shared_memory": True,
        "triton_timeout_s": 10.0,
        "triton_retries": 1,
        "triton_retry_backoff_s": 0.05,
        "triton_poll_s": 0.2,
        **overrides,
    }
    return make_settings(var_dir, **values)


def registered(peer: TritonPeer, prefix: str) -> dict[str, str]:
    """name -> key of the server's system shared-memory regions named `prefix`-N."""
    client = httpclient.InferenceServerClient(peer.url)
    try:
        status = client.get_system_shared_memory_status(headers=peer.headers)
    finally:
        client.close()
    return {r["name"]: r["key"] for r in status if r["name"].startswith(prefix + "-")}


def on_host(keys: Iterable[str]) -> list[str]:
    """The keys that exist as shared-memory objects on this host."""
    return [k for k in keys if (SHM / k.lstrip("/")).exists()]


def holding(regions: dict[str, str], x: np.ndarray) -> list[str]:
    """The regions whose input area holds `x`, read with tritonclient's utilities."""
    layout = region_layout(load_entry(MODELS / MODEL).config)
    assert layout is not None
    found = []
    for name, key in regions.items():
        handle = shm.create_shared_memory_region(name, key, layout.byte_size)  # attaches
        try:
            inside = shm.get_contents_as_numpy(handle, np.float32, x.shape, 0).copy()
        finally:
            shm.destroy_shared_memory_region(handle)  # ours only: the creator unlinks
        if np.array_equal(inside, x):
            found.append(name)
    return found


def test_shared_memory_gives_the_in_process_findings_and_is_released_at_stop(
    triton: TritonPeer, tmp_path: Path
) -> None:
    want = in_process_findings(tmp_path / "local")

    settings = shm_settings(tmp_path / "triton", triton)
    prefix = region_names(settings)
    with TestClient(create_app(settings)) as front:
        (model,) = front.get("/v1/models", headers=auth(Role.engineer)).json()
        assert model["state"] == "ready", model["reason"]
        regions = registered(triton, prefix)
        assert len(regions) == settings.triton.concurrency  # one per request in flight
        assert sorted(on_host(regions.values())) == sorted(regions.values())

        same_findings(cxr(front), want)
        with ThreadPoolExecutor(6) as pool:
            for answer in pool.map(lambda _: cxr(front), range(6)):
                same_findings(answer, want)

        # Raw tensors: onnxruntime's outputs, and the input is in one of the regions.
        x = np.random.default_rng(3).uniform(-1024, 1024, (2, 1, 224, 224)).astype(np.float32)
        v2_matches_onnxruntime(front, x)
        assert len(holding(regions, x)) == 1

        # A restarted server has forgotten the regions: aidx registers them again.
        triton.stop()
        wait_until(lambda: front.get("/readyz").status_code == 503, what="/readyz 503 while down")
        triton.start()
        wait_until(lambda: front.get("/readyz").status_code == 200, what="/readyz 200 once back")
        same_findings(cxr(front), want)
        assert registered(triton, prefix) == regions

    assert registered(triton, prefix) == {}, "regions left registered after stop"
    assert on_host(regions.values()) == [], "regions left on this host after stop"


@pytest.mark.parametrize("protocol", [TritonProtocol.http, TritonProtocol.grpc])
def test_the_backend_runs_through_the_regions_over_http_and_grpc(
    triton: TritonPeer, protocol: TritonProtocol
) -> None:
    url = triton.url if protocol is TritonProtocol.http else triton.grpc_url
    options = TritonOptions(
        url=url,
        protocol=protocol,
        headers=headers(triton, protocol),
        shared_memory=True,
        concurrency=2,
    )
    prefix = f"{options.region_prefix}-{MODEL}"
    model = TritonModel(load_entry(MODELS / MODEL), options)
    try:
        regions = registered(triton, prefix)
        assert len(regions) == 2
        for n in (3, 1, 32):  # the last fills the region: max_batch_size
            x = np.random.default_rng(n).uniform(-1024, 1024, (n, 1, 224, 224))
            x = x.astype(np.float32)
            got = model.run({"image": x})
            for name, expected in reference(x).items():
                np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)
            assert len(holding(regions, x)) == 1
    finally:
        model.close()
    assert registered(triton, prefix) == {}
    assert on_host(regions.values()) == []


def test_a_server_without_this_hosts_shared_memory_keeps_the_model_out(tmp_path: Path) -> None:
    """Triton with a /dev/shm of its own, as on another machine: it refuses the
    regions; the model stays out with a clear reason and code, nothing is left."""
    missing = private_shm_missing()
    if missing:
        pytest.skip(missing)
    with serving(TritonPeer(MODELS, only=[MODEL], access_token=TOKEN, private_shm=True)) as peer:
        settings = shm_settings(tmp_path, peer, port=free_port())  # names of its own
        prefix = region_names(settings)
        with TestClient(create_app(settings)) as front:
            (model,) = front.get("/v1/models", headers=auth(Role.engineer)).json()
            assert model["state"] == "unavailable"
            assert "needs aidx and Triton on one host" in model["reason"]
            answer = cxr(front)
            assert (answer.status_code, answer.json()["code"]) == (503, "triton_shm_unusable")
            assert front.get("/readyz").status_code == 503
        assert registered(peer, prefix) == {}
        assert not list(SHM.glob(prefix.lstrip("/") + "-*")), "regions left on this host"
        with pytest.raises(TritonSharedMemoryUnusable):  # the gRPC client says the same
            TritonModel(
                load_entry(MODELS / MODEL),
                TritonOptions(
                    url=peer.grpc_url,
                    protocol=TritonProtocol.grpc,
                    headers=headers(peer, TritonProtocol.grpc),
                    shared_memory=True,
                ),
            )


def serve(var_dir: Path, port: int, peer: TritonPeer) -> subprocess.Popen[bytes]:
    """A real `aidx serve` on `port` with shared memory to the peer, once ready."""
    env = aidx_env(
        var_dir, port, backend="triton", triton_url=peer.url,
        triton_headers=json.dumps(peer.headers), triton_shared_memory="true",
        enabled_models=json.dumps([MODEL]), writeback="false", cpu_workers="1",
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
    )
    try:
        wait_serving(f"http://127.0.0.1:{port}/readyz", process, what="aidx")
    except AssertionError:
        process.kill()
        raise
    return process


def infer_ok(port: int) -> None:
    x = np.ones((1, 1, 224, 224), np.float32)
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer",
        json=kserve_json(x),
        headers=auth(Role.engineer),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def test_a_start_after_a_kill_clears_what_the_killed_run_left(
    triton: TritonPeer, tmp_path: Path
) -> None:
    port = free_port()
    settings = shm_settings(tmp_path, triton, port=port)
    prefix = region_names(settings)
    first = serve(tmp_path, port, triton)
    try:
        infer_ok(port)
        left = registered(triton, prefix)
        assert len(left) == settings.triton.concurrency
    finally:
        first.send_signal(signal.SIGKILL)  # no stop: its regions stay registered
        first.wait(timeout=10)
    assert registered(triton, prefix) == left

    second = serve(tmp_path, port, triton)
    try:
        infer_ok(port)
        now = registered(triton, prefix)
        assert now.keys() == left.keys() and not set(now.values()) & set(left.values())
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert second.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises after its stop
    assert registered(triton, prefix) == {}
    assert on_host(now.values()) == []
    # The killed run's objects: Python's resource tracker (its child) unlinks them.
    wait_until(
        lambda: on_host(left.values()) == [], what="the killed run's objects unlinked", timeout_s=10
    )
