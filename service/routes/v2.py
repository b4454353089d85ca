"""Open Inference Protocol (KServe v2) as Triton speaks it, so tritonclient and
perf_analyzer work against aidx unchanged. Requests go through the same batcher
as the pipelines. Triton request parameters `priority` and `timeout` (us) apply."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from google.protobuf import json_format

from aidx.inference.dtypes import config_to_kserve, kserve_of
from aidx.inference.errors import BadRequest, NotFound
from aidx.inference.repository import model_config_pb2
from aidx.inference.serving import ModelState, ServedModel
from aidx.inference.settings import Role
from aidx.service import kserve
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.uploads import read_body

router = APIRouter(prefix="/v2")
engineers = require(Role.engineer)


def _served(svc: Services, name: str, version: str | None = None) -> ServedModel:
    served: ServedModel = svc.models.find(name)
    if version not in (None, "", str(served.entry.version)):
        raise NotFound(
            f"model {name!r} has no version {version!r} in service", code="model_version_not_found"
        )
    return served


def _tensor_meta(specs: Any, batched: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "datatype": config_to_kserve(model_config_pb2.DataType.Name(s.data_type)),
            "shape": ([-1] if batched else []) + list(s.dims),
        }
        for s in specs
    ]


def check_inputs(served: ServedModel, inputs: dict[str, np.ndarray]) -> None:
    config = served.entry.config
    batched = config.max_batch_size > 0
    expected = {s.name: s for s in config.input}
    if set(inputs) != set(expected):
        raise BadRequest(
            f"model {served.name!r} expects inputs {sorted(expected)}, got {sorted(inputs)}",
            code="input_mismatch",
        )
    for name, array in inputs.items():
        spec = expected[name]
        datatype = config_to_kserve(model_config_pb2.DataType.Name(spec.data_type))
        if kserve_of(array) != datatype:
            raise BadRequest(
                f"input {name!r} must be {datatype}, got {kserve_of(array)}",
                code="input_datatype_mismatch",
            )
        shape = array.shape[1:] if batched else array.shape
        dims = list(spec.dims)
        fits = len(shape) == len(dims) and all(
            d in (-1, s) for d, s in zip(dims, shape, strict=True)
        )
        if not fits or (batched and array.ndim == 0):
            raise BadRequest(
                f"input {name!r} has shape {list(array.shape)}; expected "
                f"{([-1] if batched else []) + dims}",
                code="input_shape_mismatch",
            )


def _int_parameter(parameters: dict[str, Any], name: str) -> int | None:
    """Triton's request parameters `priority` and `timeout` (us): integers or absent."""
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(
            f"parameter {name!r} must be a non-negative integer", code="invalid_parameter"
        )
    return value


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "aidx",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "model_configuration", "statistics"],
    }


@router.get("/health/live")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready")
async def ready(svc: Services = Depends(services)) -> Response:
    return Response(status_code=200 if svc.models.ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    served = _served(svc, name, version)
    config = served.entry.config
    batched = config.max_batch_size > 0
    return {
        "name": served.name,
        "versions": [str(served.entry.version)],
        "platform": config.platform or config.backend,
        "inputs": _tensor_meta(config.input, batched),
        "outputs": _tensor_meta(config.output, batched),
    }


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
async def model_config(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    config = _served(svc, name, version).entry.config
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> Response:
    served = _served(svc, name, version)
    return Response(status_code=200 if served.state is ModelState.ready else 400)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(
    request: Request,
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> Response:
    served = _served(svc, name, version)
    body = await read_body(request, svc.settings.max_upload_bytes)
    length = request.headers.get(kserve.HEADER_LENGTH)
    if length is not None and not length.isdigit():
        raise BadRequest(f"{kserve.HEADER_LENGTH} must be an integer", code="invalid_infer_request")
    parsed = kserve.parse_request(body, int(length) if length is not None else None)
    check_inputs(served, parsed.inputs)
    timeout_us = _int_parameter(parsed.parameters, "timeout")
    result = await svc.models.infer(
        served.name,
        parsed.inputs,
        priority=_int_parameter(parsed.parameters, "priority") or None,
        timeout_s=timeout_us / 1e6 if timeout_us else None,
    )
    content, header_length = kserve.encode_response(
        served.name, str(served.entry.version), parsed, result.outputs
    )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={kserve.HEADER_LENGTH: str(header_length)},
    )
