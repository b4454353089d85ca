"""KServe v2 over gRPC: `ModelInferRequest` to arrays and arrays to
`ModelInferResponse`, with the messages of the protocol's own proto
(grpc_service.proto, as generated in tritonclient). Tensors come as
`raw_input_contents` (what tritonclient sends) or typed `contents`; outputs always go
back as `raw_output_contents`, as Triton answers. Each tensor is decoded by the HTTP
codec's `decode_tensor`, so sizes, datatypes and BYTES framing are checked once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from aidx.inference.dtypes import KSERVE_TO_NUMPY, kserve_of
from aidx.inference.errors import BadRequest
from aidx.service.kserve import decode_tensor, raw_tensor

# The typed `InferTensorContents` field of each datatype (FP16 and BF16 have none:
# they travel as raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """`InferParameter`s as plain values (bool, int, str or float)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        chosen = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, chosen) if chosen else None
    return values


def _spec(tensor: pb.ModelInferRequest.InferInputTensor) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _typed(tensor: pb.ModelInferRequest.InferInputTensor) -> np.ndarray:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise BadRequest(
            f"input {tensor.name!r}: {tensor.datatype} needs raw_input_contents",
            code="invalid_infer_request",
        )
    values = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        return decode_tensor({**_spec(tensor), "data": list(values)}, None)
    # Straight into an array: a list would hold a Python object per number, ~8x the
    # message, whatever size the upload limit lets a message have.
    dtype = np.dtype(KSERVE_TO_NUMPY[tensor.datatype]).newbyteorder("<")
    try:
        flat = np.fromiter(values, dtype=dtype, count=len(values))
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1000 as UINT8
        raise BadRequest(
            f"input {tensor.name!r} has data that is not {tensor.datatype}",
            code="invalid_infer_request",
        ) from None
    return decode_tensor(_spec(tensor), flat.data.cast("B"))  # checks the shape and count


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Each input by name. As in Triton, raw contents are all or nothing: with any
    `raw_input_contents`, there is one per input, in the inputs' order."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs",
            code="invalid_infer_request",
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise BadRequest(f"input {tensor.name!r} is given twice", code="input_mismatch")
        if raw and tensor.HasField("contents"):  # as Triton: never guess which one was meant
            raise BadRequest(
                f"input {tensor.name!r} has typed contents as well as raw_input_contents; "
                "send one or the other",
                code="invalid_infer_request",
            )
        inputs[tensor.name] = (
            decode_tensor(_spec(tensor), memoryview(raw[index])) if raw else _typed(tensor)
        )
    return inputs


def wanted_outputs(request: pb.ModelInferRequest) -> list[str] | None:
    """The outputs the request names, in order (None: every output)."""
    return [output.name for output in request.outputs] or None


def encode_response(
    request: pb.ModelInferRequest, model: str, version: str, outputs: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request.id)
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=kserve_of(array), shape=array.shape)
        response.raw_output_contents.append(raw_tensor(array))
    return response
