"""tritonclient, unchanged, against a real aidx process (KServe v2 over HTTP)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from aidx.inference.settings import Role
from tests.conftest import auth
from tests.inference.reference import reference

pytestmark = pytest.mark.integration
MODEL = "cxr_pneumonia"


@pytest.fixture(scope="module")
def triton(live_server: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=live_server)


def test_health_metadata_and_config(triton: httpclient.InferenceServerClient) -> None:
    headers = auth(Role.engineer)
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL, headers=headers)
    meta = triton.get_model_metadata(MODEL, headers=headers)
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 224, 224]}
    config = triton.get_model_config(MODEL, headers=headers)
    assert config["platform"] == "onnxruntime_onnx" and int(config["max_batch_size"]) > 1


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_onnxruntime(triton: httpclient.InferenceServerClient, binary: bool) -> None:
    x = np.random.default_rng(0).uniform(-1024, 1024, (3, 1, 224, 224)).astype(np.float32)
    tensor = httpclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "cam")]
    result = triton.infer(MODEL, [tensor], outputs=outputs, headers=auth(Role.engineer), priority=1)
    expected = reference(x)
    for name in ("logits", "cam"):
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=1e-4, atol=1e-4)


def test_errors_reach_tritonclient_as_messages(triton: httpclient.InferenceServerClient) -> None:
    wrong = httpclient.InferInput("image", [1, 1, 100, 100], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 100, 100), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        triton.infer(MODEL, [wrong], headers=auth(Role.engineer))
    ok = httpclient.InferInput("image", [1, 1, 224, 224], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 1, 224, 224), np.float32))
    with pytest.raises(InferenceServerException, match="API key"):
        triton.infer(MODEL, [ok])
    with pytest.raises(InferenceServerException, match="no model"):
        triton.infer("no_such_model", [ok], headers=auth(Role.engineer))


def test_a_malformed_priority_parameter_is_400_not_500(live_server: str) -> None:
    import json

    import httpx

    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 1, 224, 224],
                "data": [0.0] * (224 * 224),
            }
        ],
        "parameters": {"priority": "urgent"},
    }
    response = httpx.post(
        f"http://{live_server}/v2/models/{MODEL}/infer",
        content=json.dumps(body),
        headers=auth(Role.engineer),
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "header_length, parameters, code",
    [
        ("\u00b2", {}, "invalid_infer_request"),  # a digit to str.isdigit(), not to int()
        ("9" * 5000, {}, "invalid_infer_request"),  # past int()'s digit limit
        (None, {"timeout": 10**400}, "invalid_parameter"),  # past a float
        (None, {"priority": 2**64}, "invalid_parameter"),  # past Triton's uint64
    ],
)
def test_out_of_range_framing_and_parameters_are_400(
    live_server: str, header_length: str | None, parameters: dict, code: str
) -> None:
    import json

    import httpx

    image = {"name": "image", "datatype": "FP32", "shape": [1, 1, 224, 224]}
    body = json.dumps(
        {"inputs": [{**image, "data": [0.0] * (224 * 224)}], "parameters": parameters}
    )
    headers = auth(Role.engineer)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = httpx.post(
        f"http://{live_server}/v2/models/{MODEL}/infer",
        content=body.encode(),
        headers={k: v.encode() for k, v in headers.items()},
    )
    assert response.status_code == 400 and response.json()["code"] == code
