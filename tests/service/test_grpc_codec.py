"""The gRPC codec on real protocol messages: raw and typed tensors, parameters, BYTES,
and the requests Triton refuses; and the deadline the batcher gets."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2

from aidx.inference.errors import BadRequest
from aidx.service.grpc_codec import decode_inputs, encode_response, parameters_of
from aidx.service.kserve import raw_tensor
from aidx.service.kserve_protocol import request_timeout_s


def request_with(x: np.ndarray, datatype: str, *, raw: bool) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=x.shape)
    if raw:
        request.raw_input_contents.append(raw_tensor(x))
    else:
        getattr(tensor.contents, "int_contents" if datatype == "INT32" else "fp32_contents").extend(
            x.ravel().tolist()
        )
    return request


@pytest.mark.parametrize(("dtype", "datatype"), [(np.float32, "FP32"), (np.int32, "INT32")])
def test_raw_and_typed_contents_decode_to_the_same_array(dtype: type, datatype: str) -> None:
    x = np.arange(6, dtype=dtype).reshape(2, 3)
    for raw in (True, False):
        (got,) = decode_inputs(request_with(x, datatype, raw=raw)).values()
        assert got.dtype == x.dtype and np.array_equal(got, x)


def test_malformed_tensors_are_bad_requests() -> None:
    x = np.zeros((2, 3), np.float32)
    short = request_with(x, "FP32", raw=True)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    extra = request_with(x, "FP32", raw=True)
    extra.raw_input_contents.append(b"")
    fp16 = service_pb2.ModelInferRequest(model_name="m")
    fp16.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    twice = request_with(x, "FP32", raw=False)
    twice.inputs.append(twice.inputs[0])
    for request, says in ((short, "bytes"), (extra, "raw_input_contents"),
                          (fp16, "raw_input_contents"), (twice, "twice")):  # fmt: skip
        with pytest.raises(BadRequest, match=says):
            decode_inputs(request)


def test_raw_and_typed_contents_on_one_input_are_refused() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    both = request_with(x, "FP32", raw=True)
    both.inputs[0].contents.fp32_contents.extend(x.ravel().tolist())
    with pytest.raises(BadRequest, match="'x'.*raw_input_contents") as caught:
        decode_inputs(both)
    assert caught.value.code == "invalid_infer_request"


def test_parameters_become_plain_values() -> None:
    request = service_pb2.ModelInferRequest()
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = 5000
    request.parameters["binary_data_output"].bool_param = True
    assert parameters_of(request.parameters) == {
        "priority": 1, "timeout": 5000, "binary_data_output": True
    }  # fmt: skip


def test_outputs_come_back_raw_as_tritonclient_reads_them() -> None:
    request = service_pb2.ModelInferRequest(model_name="m", id="r1")
    outputs = {
        "scores": np.array([[0.5, -1.25]], np.float32),
        "labels": np.array([[b"no", b"pneumonia"]], np.object_),
    }
    response = encode_response(request, "m", "3", outputs)
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "r1")
    result = InferResult(response)
    assert np.array_equal(result.as_numpy("scores"), outputs["scores"])
    assert result.as_numpy("labels").tolist() == [[b"no", b"pneumonia"]]


def test_the_batcher_gets_the_sooner_of_timeout_and_deadline() -> None:
    assert request_timeout_s({}, None) is None
    assert request_timeout_s({"timeout": 2_000_000}, None) == 2.0
    assert request_timeout_s({"timeout": 2_000_000}, 0.5) == 0.5
    assert request_timeout_s({}, 0.25) == 0.25
    with pytest.raises(BadRequest):
        request_timeout_s({"timeout": -1}, None)


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("UINT8", "uint_contents", [0, 7, 255], np.uint8),
        ("BOOL", "bool_contents", [True, False, True], np.bool_),
        ("INT64", "int64_contents", [-(2**62), 0, 2**62], np.int64),
        ("FP64", "fp64_contents", [0.5, -1e300, 3.0], np.float64),
    ],
)
def test_typed_contents_of_each_datatype(
    datatype: str, field: str, values: list, dtype: type
) -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    getattr(request.inputs.add(name="x", datatype=datatype, shape=[1, 3]).contents, field).extend(
        values
    )
    (got,) = decode_inputs(request).values()
    assert got.dtype == np.dtype(dtype) and got.tolist() == [values]


@pytest.mark.parametrize(("values", "says"), [([1000], "not UINT8"), ([1, 2], "elements|bytes")])
def test_typed_contents_out_of_range_or_count_are_refused(values: list, says: str) -> None:
    """1000 is a valid uint32 in the proto but not a UINT8; two values for a shape of one."""
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="UINT8", shape=[1]).contents.uint_contents.extend(values)
    with pytest.raises(BadRequest, match=says) as caught:
        decode_inputs(request)
    assert caught.value.code == "invalid_infer_request"
