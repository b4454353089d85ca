"""The demo CXR model run by onnxruntime in this process: the reference that aidx's own
/v2, a Triton backend (HTTP, gRPC, shared memory) and tritonclient must each match, as
tensors and as the findings for a real chest radiograph."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import MODELS, auth, dicom_bytes, make_settings

MODEL = "cxr_pneumonia"
CXR = "RG1_UNCR.dcm"


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        str(MODELS / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x}), strict=True))


def kserve_json(x: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "image",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }


def v2_matches_onnxruntime(front: TestClient, x: np.ndarray) -> None:
    """/v2 infer with JSON tensors answers what onnxruntime in this process does."""
    answer = front.post(
        f"/v2/models/{MODEL}/infer", json=kserve_json(x), headers=auth(Role.engineer)
    )
    assert answer.status_code == 200, answer.text
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}
    for name, expected in reference(x).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)


def cxr(front: TestClient) -> httpx.Response:
    """A chest radiograph from pydicom-data, posted to /v1/cxr."""
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    return front.post("/v1/cxr", content=dicom_bytes(CXR), headers=headers)


def in_process_findings(var_dir: Path) -> list[dict[str, object]]:
    """That radiograph's findings from aidx with its in-process onnxruntime backend."""
    settings = make_settings(var_dir, enabled_models=[MODEL], writeback=False)
    with TestClient(create_app(settings)) as local:
        expected = cxr(local)
    assert expected.status_code == 200, expected.text
    return list(expected.json()["findings"])


def same_findings(got: httpx.Response, want: list[dict[str, object]]) -> None:
    assert got.status_code == 200, got.text
    findings = got.json()["findings"]
    assert want and len(findings) == len(want)
    for a, b in zip(findings, want, strict=True):
        assert (a["concept"], a["present"]) == (b["concept"], b["present"])
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
        assert a["regions"] == b["regions"]
