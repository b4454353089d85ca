"""tritonclient.grpc, unchanged, against a real `aidx serve` process (KServe v2 over
gRPC, AIDX_GRPC_PORT): every demo model answers what onnxruntime does, and refusals
carry the gRPC status Triton would give."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from aidx.inference.repository import load_entry
from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import KEYS, MODELS, LiveServer, make_settings

pytestmark = pytest.mark.integration
CXR = "cxr_pneumonia"
DEMO_MODELS = ("cxr_pneumonia", "ct_pneumonia", "labs_anomaly", "wsi_tiles")


def metadata(role: Role) -> dict[str, str]:
    """The HTTP header's name, lower case, as gRPC metadata needs it."""
    return {"authorization": f"Bearer {KEYS[role]}"}


ENGINEER = metadata(Role.engineer)


@pytest.fixture(scope="module")
def client(live_servers: LiveServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(url=live_servers.grpc) as triton:
        yield triton


def sample(shape: list[int], datatype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "UINT8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(-3, 3, shape).astype(np.float32)


def onnxruntime_outputs(model: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    entry = load_entry(MODELS / model)
    session = ort.InferenceSession(str(entry.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def test_health_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "aidx"
    assert client.is_model_ready(CXR, headers=ENGINEER)
    (image,) = client.get_model_metadata(CXR, headers=ENGINEER).inputs
    assert (image.name, image.datatype, list(image.shape)) == ("image", "FP32", [-1, 1, 224, 224])
    config = client.get_model_config(CXR, headers=ENGINEER).config
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size > 1


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_infer_matches_onnxruntime(client: grpcclient.InferenceServerClient, model: str) -> None:
    meta = client.get_model_metadata(model, headers=ENGINEER)
    feed, tensors = {}, []
    for seed, spec in enumerate(meta.inputs):
        x = sample([2, *spec.shape[1:]], spec.datatype, seed)
        feed[spec.name] = x
        tensors.append(grpcclient.InferInput(spec.name, list(x.shape), spec.datatype))
        tensors[-1].set_data_from_numpy(x)
    result = client.infer(model, tensors, headers=ENGINEER, priority=1, client_timeout=60)
    expected = onnxruntime_outputs(model, feed)
    assert [o.name for o in result.get_response().outputs] == list(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), want, rtol=1e-4, atol=1e-4)


def test_typed_contents_and_chosen_outputs(live_servers: LiveServer) -> None:
    """A request with `fp32_contents` instead of raw bytes (tritonclient sends raw
    only), asking for one output: the same numbers as onnxruntime."""
    x = sample([1, 1, 224, 224], "FP32", 7)
    request = service_pb2.ModelInferRequest(model_name=CXR, id="typed-1")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=x.shape)
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="cam")
    with grpc.insecure_channel(live_servers.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=tuple(ENGINEER.items()), timeout=60)
    assert response.id == "typed-1" and [o.name for o in response.outputs] == ["cam"]
    (cam,) = response.outputs
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(cam.shape)
    np.testing.assert_allclose(got, onnxruntime_outputs(CXR, {"image": x})["cam"], atol=1e-4)


def _image(shape: list[int]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", shape, "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, np.float32))
    return tensor


def refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_refusals_carry_tritons_status_codes(client: grpcclient.InferenceServerClient) -> None:
    ok = _image([1, 1, 224, 224])
    cases = {
        "StatusCode.UNAUTHENTICATED": lambda: client.infer(CXR, [ok]),
        "StatusCode.PERMISSION_DENIED": lambda: client.infer(
            CXR, [ok], headers=metadata(Role.radiologist)
        ),
        "StatusCode.INVALID_ARGUMENT": lambda: client.infer(
            CXR, [_image([1, 1, 100, 100])], headers=ENGINEER
        ),
        "StatusCode.NOT_FOUND": lambda: client.infer("no_such_model", [ok], headers=ENGINEER),
        "StatusCode.DEADLINE_EXCEEDED": lambda: client.infer(
            CXR,
            [ok],
            headers=ENGINEER,
            timeout=1,  # Triton's `timeout` parameter, in us
        ),
    }
    for status, call in cases.items():
        assert refusal(call).status() == status, status
    assert "shape" in refusal(cases["StatusCode.INVALID_ARGUMENT"]).message()
    assert "API key" in refusal(cases["StatusCode.UNAUTHENTICATED"]).message()
    unknown_version = refusal(lambda: client.is_model_ready(CXR, "7", headers=ENGINEER))
    assert unknown_version.status() == "StatusCode.NOT_FOUND"


def test_the_key_may_come_as_x_api_key(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready(CXR, headers={"x-api-key": KEYS[Role.admin]})


def test_calls_are_counted_and_batched_like_http(
    client: grpcclient.InferenceServerClient, live_servers: LiveServer
) -> None:
    def counters() -> dict[str, float]:
        text = httpx.get(f"http://{live_servers.http}/metrics").text
        wanted = {
            'aidx_requests_total{route="/inference.GRPCInferenceService/ModelInfer",status="OK"}',
            'aidx_requests_total{route="/inference.GRPCInferenceService/ModelInfer",'
            'status="NOT_FOUND"}',
            f'aidx_batch_size_count{{model="{CXR}"}}',
        }
        values = dict.fromkeys(wanted, 0.0)
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in wanted:
                values[name] = float(value)
        return values

    before = counters()
    client.infer(CXR, [_image([1, 1, 224, 224])], headers=ENGINEER)
    refusal(lambda: client.infer("no_such_model", [_image([1, 1, 224, 224])], headers=ENGINEER))
    after = counters()
    assert all(after[k] - before[k] == 1 for k in after), (before, after)


def test_a_taken_grpc_port_fails_the_start(tmp_path: Path) -> None:
    """As a taken HTTP port does: a service that cannot listen does not pretend to."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, enabled_models=["labs_anomaly"], grpc_port=port)
        with pytest.raises(RuntimeError, match="Failed to bind"), TestClient(create_app(settings)):
            pass


def _batches_run(live_servers: LiveServer) -> float:
    text = httpx.get(f"http://{live_servers.http}/metrics").text
    wanted = f'aidx_batch_size_count{{model="{CXR}"}}'
    return next(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(wanted)
    )


def test_outputs_are_checked_before_the_model_runs(
    client: grpcclient.InferenceServerClient, live_servers: LiveServer
) -> None:
    """An unknown or repeated output name, an out-of-range parameter: INVALID_ARGUMENT,
    and no batch computed for a request whose answer could not be given."""
    image = _image([1, 1, 224, 224])
    before = _batches_run(live_servers)
    for outputs in (["nope"], ["logits", "logits"]):
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs]
        call = lambda w=wanted: client.infer(CXR, [image], outputs=w, headers=ENGINEER)  # noqa: E731
        assert refusal(call).status() == "StatusCode.INVALID_ARGUMENT", outputs
    assert _batches_run(live_servers) == before


def test_typed_values_out_of_their_datatype_are_invalid_argument(live_servers: LiveServer) -> None:
    """1000 as UINT8 (numpy's OverflowError) is the client's mistake, not INTERNAL."""
    request = service_pb2.ModelInferRequest(model_name="wsi_tiles")
    tensor = request.inputs.add(name="tile", datatype="UINT8", shape=[1])
    tensor.contents.uint_contents.append(1000)
    with grpc.insecure_channel(live_servers.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, metadata=tuple(ENGINEER.items()), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not UINT8" in (refused.value.details() or "")
