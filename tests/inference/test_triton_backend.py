"""AIDX_BACKEND=triton against a second `aidx serve` standing in for Triton.

The findings, outage and mismatch tests run against a real NVIDIA Triton server in
test_triton_peer.py. This file keeps what that server cannot show: an API key on
every call (aidx's own KServe v2 endpoint, /v2, Triton's protocol, wants one; the
PyTriton peer has no key on inference) and a wrong key refused, not retried; and the
/v2 path through a Triton-backed aidx matching onnxruntime across an outage.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from aidx.inference.errors import ModelUnavailable
from aidx.inference.repository import load_entry
from aidx.inference.runtime_triton import TritonModel, TritonOptions
from aidx.inference.serving import batcher_config
from aidx.inference.settings import Role, Settings
from aidx.service.app import create_app

from ..conftest import MODELS, aidx_env, auth, dicom_bytes, free_port, make_settings
from ..waiting import wait_serving, wait_until
from .reference import kserve_json, v2_matches_onnxruntime

pytestmark = pytest.mark.integration
MODEL = "cxr_pneumonia"


@dataclass
class AidxKServePeer:
    """`aidx serve` with the in-process onnxruntime backend, serving /v2 on a fixed
    port, which can be stopped and started again (an outage)."""

    var_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AidxKServePeer:
        env = aidx_env(self.var_dir, self.port, enabled_models=json.dumps([MODEL]),
                       writeback="false", cpu_workers="1")  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
        )
        wait_serving(f"http://{self.url}/v2/health/ready", self.process, what="the KServe peer")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AidxKServePeer]:
    server = AidxKServePeer(tmp_path_factory.mktemp("kserve-peer")).start()
    try:
        yield server
    finally:
        server.stop()


def triton_settings(var_dir: Path, peer: AidxKServePeer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "enabled_models": [MODEL],
        "writeback": False,
        "backend": "triton",
        "triton_url": peer.url,
        "triton_headers": auth(Role.engineer),  # the peer wants an API key
        "triton_timeout_s": 5.0,
        "triton_retries": 1,
        "triton_retry_backoff_s": 0.05,
        "triton_poll_s": 0.2,
        **overrides,
    }
    return make_settings(var_dir, **values)


def test_the_backend_matches_onnxruntime_and_follows_an_outage(
    peer: AidxKServePeer, tmp_path: Path
) -> None:
    settings = triton_settings(tmp_path, peer)
    with TestClient(create_app(settings)) as front:  # type: ignore[arg-type]
        (model,) = front.get("/v1/models", headers=auth(Role.engineer)).json()
        assert (model["state"], model["backend"], model["provider"]) == (
            "ready",
            "triton",
            "triton",
        )

        # Raw tensors: the same outputs as onnxruntime in this process.
        x = np.random.default_rng(1).uniform(-1024, 1024, (2, 1, 224, 224)).astype(np.float32)
        v2_matches_onnxruntime(front, x)

        # A chest radiograph end to end: the same findings as the in-process backend.
        headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
        dicom = dicom_bytes("RG1_UNCR.dcm")
        remote = front.post("/v1/cxr", content=dicom, headers=headers)
        assert remote.status_code == 200, remote.text
        local = httpx.post(f"http://{peer.url}/v1/cxr", content=dicom, headers=headers, timeout=60)
        assert local.status_code == 200, local.text
        for a, b in zip(remote.json()["findings"], local.json()["findings"], strict=True):
            assert a["concept"] == b["concept"] and a["present"] == b["present"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
            assert a["regions"] == b["regions"]

        # The server goes away: a clear 503 with a stable code, and readiness follows.
        peer.stop()
        down = front.post(
            f"/v2/models/{MODEL}/infer", json=kserve_json(x[:1]), headers=auth(Role.engineer)
        )
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "triton_unavailable"
        wait_until(lambda: front.get("/readyz").status_code == 503, what="/readyz 503")
        down = front.post("/v1/cxr", content=dicom, headers=headers)
        assert (down.status_code, down.json()["code"]) == (503, "triton_unavailable")

        # ... and comes back: aidx serves again without a restart.
        peer.start()
        wait_until(lambda: front.get("/readyz").status_code == 200, what="/readyz 200")
        again = front.post(
            f"/v2/models/{MODEL}/infer", json=kserve_json(x), headers=auth(Role.engineer)
        )
        assert again.status_code == 200, again.text


def test_the_api_key_travels_and_a_wrong_one_is_refused_not_retried(
    peer: AidxKServePeer,
) -> None:
    entry = load_entry(MODELS / MODEL)
    options = TritonOptions(url=peer.url, headers=auth(Role.engineer))
    model = TritonModel(entry, options)
    out = model.run({"image": np.zeros((1, 1, 224, 224), np.float32)})
    assert out["logits"].shape == (1, 2)
    bad = TritonOptions(url=peer.url, headers={"Authorization": "Bearer not-a-key"})
    with pytest.raises(ModelUnavailable, match="API key") as refused:
        TritonModel(entry, bad)
    assert refused.value.code == "triton_refused"


def test_pass_through_batching_when_triton_batches(peer: AidxKServePeer, tmp_path: Path) -> None:
    entry = load_entry(MODELS / MODEL)
    local = batcher_config(entry.config)
    assert local.max_queue_delay_us == 2000  # config.pbtxt's delay, in-process
    passthrough = batcher_config(entry.config, triton_settings(tmp_path, peer).triton)
    assert passthrough.max_queue_delay_us == 0 and passthrough.instance_count >= 4
    kept = triton_settings(tmp_path, peer, triton_max_queue_delay_us=None)
    assert batcher_config(entry.config, kept.triton).max_queue_delay_us == 2000
