"""The KServe v2 codec: JSON and binary tensors, and malformed requests."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from aidx.inference.errors import BadRequest
from aidx.service.kserve import encode_response, parse_request


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
