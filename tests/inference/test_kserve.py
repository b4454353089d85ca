"""The KServe v2 codec: JSON and binary tensors, and malformed requests."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from aidx.inference.errors import BadRequest, PayloadTooLarge
from aidx.service.kserve import MAX_JSON_HEADER_BYTES, encode_response, parse_request


def framed(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


def test_json_and_binary_inputs_decode_to_the_same_arrays() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    as_json = parse_request(
        json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": x.tolist()}]}
        ).encode(),
        None,
    )
    body, length = framed(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        },
        x.tobytes(),
    )
    as_binary = parse_request(body, length)
    np.testing.assert_array_equal(as_json.inputs["x"], x)
    np.testing.assert_array_equal(as_binary.inputs["x"], x)


def test_bytes_tensors_round_trip() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"", b"xyz"))
    body, length = framed(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    request = parse_request(body, length)
    assert request.inputs["s"].tolist() == [b"ab", b"", b"xyz"]


def test_binary_outputs_are_framed_after_the_json_header() -> None:
    request = parse_request(
        json.dumps(
            {
                "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
            }
        ).encode(),
        None,
    )
    y = np.array([[1.5, 2.5]], np.float32)
    body, length = encode_response("m", "1", request, {"y": y, "z": np.array([[7]], np.int64)})
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert header["outputs"][1]["data"] == [7]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), y.ravel())


@pytest.mark.parametrize(
    "body, length",
    [
        (b"{not json", None),
        (b'{"inputs": 3}', None),
        (
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2]}]}
            ).encode(),
            None,
        ),
        (
            json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}
            ).encode(),
            None,
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [2],
                            "parameters": {"binary_data_size": 8},
                        }
                    ]
                }
            ).encode()
            + b"1234",
            67,
        ),
        (b"{}", 999),
    ],
)
def test_malformed_requests_are_400(body: bytes, length: int | None) -> None:
    with pytest.raises(BadRequest):
        parse_request(body, length)


def _one_input(**spec: object) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", **spec}]}).encode()


BYTES_MANY_EMPTY = struct.pack("<I", 0) * 1000  # 1000 empty elements for a shape of 1


@pytest.mark.parametrize(
    "body, length",
    [
        # values that do not fit the datatype (numpy's OverflowError)
        (_one_input(datatype="INT8", shape=[1], data=[1000]), None),
        (_one_input(datatype="UINT8", shape=[1], data=[-1]), None),
        (_one_input(datatype="INT64", shape=[1], data=[2**70]), None),
        # shapes numpy cannot make, though their element count is small
        (_one_input(shape=[0, 2**62, 2**62], data=[]), None),
        (_one_input(shape=[2**62, 2**62, 0], data=[]), None),
        (_one_input(shape=[1] * 65, data=[1.0]), None),
        (_one_input(shape=[True], data=[1.0]), None),
        # JSON of the wrong kinds
        (_one_input(shape=[1], data=[1.0], parameters=[1]), None),
        framed(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "INT8",
                        "shape": [1],
                        "parameters": {"binary_data_size": True},
                    }
                ]
            },
            b"\0",
        ),  # fmt: skip
        (json.dumps({"inputs": [], "parameters": [1]}).encode(), None),
        (json.dumps({"inputs": [], "parameters": "ab"}).encode(), None),
        (json.dumps({"inputs": [], "outputs": ["logits"]}).encode(), None),
        (json.dumps({"inputs": [], "outputs": "x"}).encode(), None),
        (json.dumps({"inputs": [], "outputs": [{"name": ["logits"]}]}).encode(), None),
        (json.dumps({"inputs": [], "outputs": [{"name": "y", "parameters": [1]}]}).encode(), None),
        # JSON Python refuses to convert: an integer of 5000 digits, arrays nested deep
        (b'{"inputs": [], "id": ' + b"9" * 5000 + b"}", None),
        (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    ],
)
def test_inputs_numpy_or_json_refuse_are_400(body: bytes, length: int | None) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(body, length)
    assert refused.value.code == "invalid_infer_request"


def test_an_input_named_twice_is_refused() -> None:
    spec = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}
    with pytest.raises(BadRequest) as refused:
        parse_request(json.dumps({"inputs": [spec, spec]}).encode(), None)
    assert refused.value.code == "input_mismatch"


def test_bytes_elements_past_the_shape_stop_the_parse() -> None:
    """A small message of many empty BYTES elements is refused at the shape's count,
    before it has built a list of all of them."""
    header = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                          "parameters": {"binary_data_size": len(BYTES_MANY_EMPTY)}}]}  # fmt: skip
    body, length = framed(header, BYTES_MANY_EMPTY)
    with pytest.raises(BadRequest, match="more than the 1 elements"):
        parse_request(body, length)


def test_no_outputs_named_means_every_output() -> None:
    """Triton answers every output when none is named, an empty list included."""
    parsed = parse_request(_one_input(shape=[1], data=[1.0])[:-1] + b', "outputs": []}', None)
    assert parsed.outputs is None


def test_a_json_header_past_its_bound_is_413_before_it_is_decoded() -> None:
    """A tensor as JSON costs ~10x its text while decoded: the header has its own bound,
    whatever the upload limit; the same numbers as binary data are welcome."""
    header = _one_input(shape=[1], data=[1.0])
    padded = header[:-1] + b" " * MAX_JSON_HEADER_BYTES + b"}"
    with pytest.raises(PayloadTooLarge) as refused:
        parse_request(padded, None)
    assert refused.value.code == "infer_header_too_large"
    assert parse_request(header, None).inputs["x"].tolist() == [1.0]
