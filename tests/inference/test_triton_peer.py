"""AIDX_BACKEND=triton against a real NVIDIA Triton Inference Server.

The server is Triton 2.51's `tritonserver` from PyPI's nvidia-pytriton 0.7.0 (in
`.peers/pytriton`, made by `make peers`), serving the demo model through its Python
backend: tests/peers/pytriton_peer.py binds cxr_pneumonia with the names, datatypes,
dims and max_batch_size of its config.pbtxt, Triton's dynamic batcher on, and an
onnxruntime session inside. What is not covered here: Triton's own onnxruntime
backend (not in that wheel), so Triton loading `models/` directly from config.pbtxt.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from aidx.inference.errors import ModelUnavailable
from aidx.inference.repository import load_entry
from aidx.inference.runtime_triton import TritonModel, TritonOptions
from aidx.inference.settings import Role, Settings
from aidx.inference.settings_sections import TritonProtocol
from aidx.service.app import create_app

from ..conftest import MODELS, auth, make_settings
from ..peers.triton import TritonPeer, running, serving
from ..waiting import wait_until
from .reference import cxr, in_process_findings, reference, same_findings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "cxr_pneumonia"


@pytest.fixture(scope="module")
def triton_peer() -> Iterator[TritonPeer]:
    with serving(TritonPeer(MODELS, only=[MODEL])) as peer:
        yield peer


@pytest.fixture
def triton(triton_peer: TritonPeer) -> TritonPeer:
    return running(triton_peer)


def triton_settings(var_dir: Path, peer: TritonPeer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "enabled_models": [MODEL],
        "writeback": False,
        "backend": "triton",
        "triton_url": peer.url,
        "triton_timeout_s": 10.0,
        "triton_retries": 1,
        "triton_retry_backoff_s": 0.05,
        "triton_poll_s": 0.2,
        **overrides,
    }
    return make_settings(var_dir, **values)


def _tritonserver_pid(group: int) -> int:
    """The tritonserver process in the peer's process group (PyTriton's child)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "tritonserver" and os.getpgid(
                    int(entry.name)
                ) == group:
                    return int(entry.name)
            except (OSError, ProcessLookupError):
                continue  # gone meanwhile
    raise AssertionError(f"no tritonserver in process group {group}")


def _ready_on_a_new_connection(url: str) -> bool:
    try:
        return httpx.get(f"http://{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_real_triton_gives_the_in_process_findings_and_follows_an_outage(
    triton: TritonPeer, tmp_path: Path
) -> None:
    # The in-process onnxruntime backend: the findings to match.
    want = in_process_findings(tmp_path / "local")

    with TestClient(create_app(triton_settings(tmp_path / "triton", triton))) as front:
        (model,) = front.get("/v1/models", headers=auth(Role.engineer)).json()
        assert (model["state"], model["backend"], model["provider"]) == (
            "ready",
            "triton",
            "triton",
        )
        assert front.get("/readyz").status_code == 200

        same_findings(cxr(front), want)

        # Several at once: Triton's dynamic batcher forms the batches, answers agree.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: cxr(front), range(6)))
        for answer in answers:
            assert answer.status_code == 200, answer.text
            for a, b in zip(answer.json()["findings"], want, strict=True):
                assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)

        # Triton goes away: 503 with a stable code, and /readyz follows.
        triton.stop()
        down = cxr(front)
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "triton_unavailable"
        wait_until(lambda: front.get("/readyz").status_code == 503, what="/readyz 503 while down")
        again_down = cxr(front)
        assert (again_down.status_code, again_down.json()["code"]) == (503, "triton_unavailable")

        # ... and comes back on the same address: aidx serves again without a restart.
        triton.start()
        wait_until(lambda: front.get("/readyz").status_code == 200, what="/readyz 200 once back")
        back = cxr(front)
        assert back.status_code == 200, back.text
        for a, b in zip(back.json()["findings"], want, strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


@pytest.mark.parametrize("protocol", [TritonProtocol.http, TritonProtocol.grpc])
def test_raw_tensors_through_real_triton_match_onnxruntime(
    triton: TritonPeer, protocol: TritonProtocol
) -> None:
    url = triton.url if protocol is TritonProtocol.http else triton.grpc_url
    model = TritonModel(load_entry(MODELS / MODEL), TritonOptions(url=url, protocol=protocol))
    x = np.random.default_rng(7).uniform(-1024, 1024, (3, 1, 224, 224)).astype(np.float32)
    got = model.run({"image": x})
    for name, expected in reference(x).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)


def test_a_local_config_that_differs_from_real_triton_keeps_the_model_out(
    triton: TritonPeer, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(MODELS / MODEL, repository / MODEL)
    config = repository / MODEL / "config.pbtxt"
    config.write_text(
        config.read_text()
        .replace("dims: [ 1, 224, 224 ]", "dims: [ 1, 256, 256 ]")  # the card checks outputs
        .replace("max_batch_size: 32", "max_batch_size: 16")
    )
    settings = triton_settings(tmp_path, triton, model_repository=repository)
    with TestClient(create_app(settings)) as front:
        (model,) = front.get("/v1/models", headers=auth(Role.engineer)).json()
        assert model["state"] == "unavailable"
        expected = "input 'image' is FP32[-1, 1, 224, 224] on the server, FP32[-1, 1, 256, 256]"
        assert expected in model["reason"]
        assert "max_batch_size is 32 on the server, 16 here" in model["reason"]
        answer = cxr(front)
        assert (answer.status_code, answer.json()["code"]) == (503, "triton_model_mismatch")


def test_a_key_on_real_triton_travels_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    """Triton's restricted APIs (metadata, model config, inference) behind a header:
    AIDX_TRITON_HEADERS carries it; a wrong one is refused at load, not retried."""
    with serving(TritonPeer(MODELS, only=[MODEL], access_token="peer-key-0123456789")) as peer:
        entry = load_entry(MODELS / MODEL)
        model = TritonModel(entry, TritonOptions(url=peer.url, headers=peer.headers))
        out = model.run({"image": np.zeros((1, 1, 224, 224), np.float32)})
        assert out["logits"].shape == (1, 2)
        wrong = TritonOptions(url=peer.url, headers={"triton-access-token": "not-the-key"})
        with pytest.raises(ModelUnavailable) as refused:
            TritonModel(entry, wrong)
        assert refused.value.code == "triton_refused"
        with pytest.raises(ModelUnavailable) as refused:
            TritonModel(entry, TritonOptions(url=peer.url))
        assert refused.value.code == "triton_refused"


def test_readiness_turns_false_on_every_connection_once_triton_starts_to_stop() -> None:
    """While Triton shuts down it keeps answering on open keep-alive connections for its
    exit timeout (model still loaded) and refuses new ones: readiness read over an open
    connection must not say ready then, or the model flaps back into service."""
    with serving(TritonPeer(MODELS, only=[MODEL])) as peer:
        assert peer.process is not None
        model = TritonModel(load_entry(MODELS / MODEL), TritonOptions(url=peer.url, retries=0))
        assert model.ready()
        model.run({"image": np.zeros((1, 1, 224, 224), np.float32)})  # a kept connection
        log = peer.workdir / "triton.log"
        # tritonserver alone, as an orchestrator stops it: signalling the whole group
        # also stopped PyTriton's wrapper, which now and then quit forwarding the
        # server's log before the line awaited here reached it
        os.kill(_tritonserver_pid(peer.process.pid), signal.SIGTERM)
        wait_until(lambda: "Signal (15) received" in log.read_text(), what="Triton saw SIGTERM")
        # It logs the signal a moment before it stops taking new connections; from then
        # on the model's readiness must say no, though its old connection still answers.
        wait_until(lambda: not _ready_on_a_new_connection(peer.url), what="new connections refused")
        seen = []
        while peer.process.poll() is None:
            seen.append(model.ready())
            time.sleep(0.05)
        assert not any(seen), seen
