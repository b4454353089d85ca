"""gRPC goes through the same access gate as HTTP: wrong keys in the metadata are
throttled per client address and every refusal and model use is in the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import KEYS, free_port, make_settings

FAILURES_MAX = 3


def _audit(var_dir: Path) -> list[dict]:
    lines = (var_dir / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _status(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as refused:
        call()
    return str(refused.value.status())


def test_grpc_wrong_keys_are_throttled_and_every_call_recorded(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        enabled_models=["labs_anomaly"],
        grpc_port=port,
        access_auth_failures_max=FAILURES_MAX,
        access_auth_failures_window_s=60,
    )
    with TestClient(create_app(settings)):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        wrong = {"authorization": "Bearer " + "w" * 40}
        engineer = {"authorization": f"Bearer {KEYS[Role.engineer]}"}
        refusals = [
            _status(lambda: client.is_model_ready("labs_anomaly", headers=wrong))
            for _ in range(FAILURES_MAX + 1)
        ]
        assert refusals == [str(grpc.StatusCode.UNAUTHENTICATED)] * FAILURES_MAX + [
            str(grpc.StatusCode.UNAVAILABLE)
        ]
        # the address is throttled: a right key learns nothing more until the window moves
        assert _status(lambda: client.is_model_ready("labs_anomaly", headers=engineer)) == str(
            grpc.StatusCode.UNAVAILABLE
        )
        client.close()
    refused = [e for e in _audit(tmp_path) if e["action"] == "access.refused"]
    assert [e["outcome"] for e in refused] == ["invalid_api_key"] * FAILURES_MAX + [
        "auth_throttled"
    ]
    assert {e["client"] for e in refused} == {"127.0.0.1"}
    assert {e["resource"] for e in refused} == {"gRPC ModelReady"}


def test_grpc_model_use_is_recorded_like_http(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, enabled_models=["labs_anomaly"], grpc_port=port)
    with TestClient(create_app(settings)):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        radiologist = {"authorization": f"Bearer {KEYS[Role.radiologist]}"}
        status = _status(lambda: client.get_model_metadata("labs_anomaly", headers=radiologist))
        assert status == str(grpc.StatusCode.PERMISSION_DENIED)
        engineer = {"authorization": f"Bearer {KEYS[Role.engineer]}"}
        metadata = client.get_model_metadata("labs_anomaly", headers=engineer, as_json=True)
        inputs = []
        for spec in metadata["inputs"]:  # one all-zero item of each input
            shape = [1, *(int(d) for d in spec["shape"][1:])]
            tensor = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
            tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
            inputs.append(tensor)
        client.infer("labs_anomaly", inputs, headers=engineer)
        client.close()
    entries = _audit(tmp_path)
    denied = [e for e in entries if e["outcome"] == "role_not_allowed"]
    assert denied and denied[0]["resource"] == "gRPC ModelMetadata"
    assert denied[0]["client"] == "127.0.0.1"
    infer = [e for e in entries if e["action"] == "v2.infer"]
    assert infer and infer[0]["outcome"] == "ok" and infer[0]["resource"] == "model/labs_anomaly"
