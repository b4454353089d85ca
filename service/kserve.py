"""Open Inference Protocol (KServe v2) codec, with Triton's binary tensor extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the JSON's
length is then given by the `Inference-Header-Content-Length` header, and each
binary input says its size in `parameters.binary_data_size`. Responses use the same
framing for outputs that ask for `binary_data`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from aidx.inference.dtypes import KSERVE_TO_NUMPY, kserve_of
from aidx.inference.errors import BadRequest, PayloadTooLarge

HEADER_LENGTH = "Inference-Header-Content-Length"
# A tensor's shape is refused past these before numpy sees it: a few bytes of JSON
# must not ask for more dimensions than numpy has, or for a size it cannot hold
# (a zero dimension beside huge ones passes an element count of 0).
MAX_DIMS = 32
MAX_ELEMENTS = 2**40
# json.loads makes a Python object of every number: a tensor sent as JSON takes about
# ten times its text in memory while it is decoded. The binary extension has no such
# cost, so the JSON header stays bounded even where AIDX_MAX_UPLOAD_BYTES is raised
# for whole CT series.
MAX_JSON_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any]
    outputs: list[dict[str, Any]] | None  # None: every output


def _bad(message: str, code: str = "invalid_infer_request") -> BadRequest:
    return BadRequest(message, code=code)


def _decode_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """The elements of a length-prefixed BYTES tensor; stops past `count` elements, so
    a message of many empty elements cannot build a list far larger than itself."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(items) == count:
            raise _bad(f"BYTES tensor holds more than the {count} elements its shape says")
        if offset + 4 > len(raw):
            raise _bad("BYTES tensor ends inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _bad("BYTES tensor element runs past the end of its data")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def raw_tensor(array: np.ndarray) -> bytes:
    """Triton's binary form of a tensor: little-endian, BYTES length-prefixed."""
    if array.dtype == np.object_:
        return _encode_bytes_tensor(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _is_count(value: Any) -> bool:
    """A non-negative integer, JSON's `true` excluded (Python counts it as 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shape_of(spec: dict[str, Any]) -> tuple[int, ...]:
    name, shape = spec.get("name"), spec.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(f"input {name!r} needs a shape of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise _bad(f"input {name!r} has {len(shape)} dimensions; at most {MAX_DIMS}")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise _bad(f"input {name!r} has a shape too large for any tensor: {shape}")
    return tuple(shape)


def decode_tensor(spec: dict[str, Any], blob: memoryview | None) -> np.ndarray:
    """One input from its spec (name, datatype, shape and, without `blob`, its `data`)
    or from its raw little-endian bytes; gRPC's tensors are decoded here too."""
    name, datatype = spec.get("name"), spec.get("datatype")
    shape = _shape_of(spec)
    count = math.prod(shape)
    if datatype == "BYTES":
        if blob is not None:
            values: list[Any] = _decode_bytes_tensor(bytes(blob), count)
        else:
            values = [v.encode() if isinstance(v, str) else v for v in _flat(spec.get("data"))]
        if len(values) != count:
            raise _bad(f"input {name!r} has {len(values)} elements, shape says {count}")
        return np.array(values, dtype=np.object_).reshape(shape)
    dtype = KSERVE_TO_NUMPY.get(str(datatype))
    if dtype is None:
        raise _bad(f"input {name!r} has unknown datatype {datatype!r}", "invalid_datatype")
    if blob is not None:
        expected = count * np.dtype(dtype).itemsize
        if len(blob) != expected:
            raise _bad(f"input {name!r} has {len(blob)} bytes, shape and datatype need {expected}")
        return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    try:
        array = np.asarray(_flat(spec.get("data")), dtype=dtype)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1000 as INT8
        raise _bad(f"input {name!r} has data that is not {datatype}") from None
    if array.size != count:
        raise _bad(f"input {name!r} has {array.size} elements, shape says {count}")
    return array.reshape(shape)


def _flat(data: Any) -> list[Any]:
    if data is None:
        raise _bad("an input has neither data nor binary_data_size")
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise _bad(f"the parameters of {what} must be a JSON object")
    return parameters


def _header(body: bytes, json_end: int) -> dict[str, Any]:
    if json_end > MAX_JSON_HEADER_BYTES:
        raise PayloadTooLarge(
            f"the inference request's JSON is {json_end} bytes; at most "
            f"{MAX_JSON_HEADER_BYTES} (send tensors as binary data: {HEADER_LENGTH})",
            code="infer_header_too_large",
        )
    try:
        header = json.loads(body[:json_end])
    # ValueError: besides bad JSON, an integer of more digits than Python converts;
    # RecursionError: arrays nested thousands deep
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("the inference request header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise _bad("an inference request needs an 'inputs' list")
    return header


def _requested_outputs(header: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The outputs asked for, each {name, parameters}; None (none named): every one."""
    outputs = header.get("outputs")
    if outputs is None or outputs == []:
        return None
    if not isinstance(outputs, list):
        raise _bad("'outputs' must be a list of {name, parameters} objects")
    for output in outputs:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise _bad("each requested output needs a name")
        _parameters(output, f"output {output['name']!r}")
    return outputs


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    json_end = len(body) if header_length is None else header_length
    if json_end < 0 or json_end > len(body):
        raise _bad(f"{HEADER_LENGTH} is outside the body")
    header = _header(body, json_end)
    binary = memoryview(body)[json_end:]
    offset, inputs = 0, {}
    for spec in header["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _bad("each input needs a name")
        name = spec["name"]
        if name in inputs:
            raise _bad(f"input {name!r} is given twice", "input_mismatch")
        size = _parameters(spec, f"input {name!r}").get("binary_data_size")
        blob = None
        if size is not None:
            if not _is_count(size) or offset + size > len(binary):
                raise _bad(f"input {name!r}: binary_data_size runs past the body")
            blob, offset = binary[offset : offset + size], offset + size
        inputs[name] = decode_tensor(spec, blob)
    if offset != len(binary):
        raise _bad("the body holds more binary data than the inputs claim")
    parameters = _parameters(header, "the request")
    return InferRequest(header.get("id"), inputs, dict(parameters), _requested_outputs(header))


def encode_response(
    model: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    wanted = request.outputs
    if wanted is None:
        wanted = [{"name": name} for name in outputs]
    entries, blobs = [], []
    for spec in wanted:
        name = spec["name"]
        array = outputs[name]  # kserve_protocol.infer answered each name asked for
        entry: dict[str, Any] = {
            "name": name,
            "datatype": kserve_of(array),
            "shape": list(array.shape),
        }
        if (spec.get("parameters") or {}).get("binary_data", binary_default):
            raw = raw_tensor(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif array.dtype == np.object_:
            entry["data"] = [
                v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)
            ]
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
