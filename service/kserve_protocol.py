"""KServe v2 (the Open Inference Protocol) as Triton serves it, without a transport.

`/v2` over HTTP (routes/v2.py) and `inference.GRPCInferenceService` over gRPC
(grpc_server.py) only decode and encode; finding the model, checking the inputs,
reading the request parameters `priority` and `timeout` (us) and running the batcher
happen here, once, so both protocols validate and refuse alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aidx.inference.dtypes import config_to_kserve, kserve_of
from aidx.inference.errors import BadRequest, NotFound
from aidx.inference.repository import model_config_pb2
from aidx.inference.serving import ModelState, ServedModel
from aidx.inference.settings import Role
from aidx.service.container import Services

SERVER_NAME = "aidx"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "model_configuration")  # statistics: /metrics instead
# Who may use the model routes and RPCs (admin may use everything); health is open.
MODEL_ROLES = (Role.engineer,)


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


def served_model(svc: Services, name: str, version: str | None = None) -> ServedModel:
    """The model `name`; `version` empty or None means the one in service."""
    served: ServedModel = svc.models.find(name)
    if version not in (None, "", str(served.entry.version)):
        raise NotFound(
            f"model {name!r} has no version {version!r} in service", code="model_version_not_found"
        )
    return served


def model_ready(served: ServedModel) -> bool:
    return served.state is ModelState.ready


def _tensor_meta(specs: Any, batched: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "datatype": config_to_kserve(model_config_pb2.DataType.Name(s.data_type)),
            "shape": ([-1] if batched else []) + list(s.dims),
        }
        for s in specs
    ]


def model_metadata(served: ServedModel) -> dict[str, Any]:
    config = served.entry.config
    batched = config.max_batch_size > 0
    return {
        "name": served.name,
        "versions": [str(served.entry.version)],
        "platform": config.platform or config.backend,
        "inputs": _tensor_meta(config.input, batched),
        "outputs": _tensor_meta(config.output, batched),
    }


@dataclass(frozen=True)
class _InputSpec:
    datatype: str
    dims: tuple[int, ...]


# The inputs each model config declares, read from the protobuf once: enum names and
# repeated fields cost more to read than the check itself on every request. Keyed by
# the config's id, with the config held so that the id is not reused while cached.
_input_specs: dict[int, tuple[Any, dict[str, _InputSpec]]] = {}


def _inputs_of(config: Any) -> dict[str, _InputSpec]:
    cached = _input_specs.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    specs = {
        s.name: _InputSpec(
            config_to_kserve(model_config_pb2.DataType.Name(s.data_type)), tuple(s.dims)
        )
        for s in config.input
    }
    if len(_input_specs) > 256:  # models reloaded many times: forget the old configs
        _input_specs.clear()
    _input_specs[id(config)] = (config, specs)
    return specs


def check_inputs(served: ServedModel, inputs: dict[str, np.ndarray]) -> None:
    config = served.entry.config
    batched = config.max_batch_size > 0
    expected = _inputs_of(config)
    if inputs.keys() != expected.keys():
        raise BadRequest(
            f"model {served.name!r} expects inputs {sorted(expected)}, got {sorted(inputs)}",
            code="input_mismatch",
        )
    for name, array in inputs.items():
        spec = expected[name]
        if kserve_of(array) != spec.datatype:
            raise BadRequest(
                f"input {name!r} must be {spec.datatype}, got {kserve_of(array)}",
                code="input_datatype_mismatch",
            )
        shape = array.shape[1:] if batched else array.shape
        dims = spec.dims
        fits = len(shape) == len(dims) and all(
            d in (-1, s) for d, s in zip(dims, shape, strict=True)
        )
        if not fits or (batched and array.ndim == 0):
            raise BadRequest(
                f"input {name!r} has shape {list(array.shape)}; expected "
                f"{([-1] if batched else []) + list(dims)}",
                code="input_shape_mismatch",
            )


def int_parameter(parameters: dict[str, Any], name: str) -> int | None:
    """Triton's request parameters `priority` and `timeout` (us): unsigned 64-bit
    integers, as its proto has them, or absent."""
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise BadRequest(
            f"parameter {name!r} must be an integer from 0 to 2^64-1", code="invalid_parameter"
        )
    return value


def check_outputs(served: ServedModel, wanted: list[str] | None) -> None:
    """Refuse unknown or repeated output names before the model runs for them."""
    if wanted is None:
        return
    runtime = served.runtime  # what the model really returns; else what its config lists
    known = set(runtime.output_names if runtime else (o.name for o in served.entry.config.output))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise BadRequest(
            f"model {served.name!r} has no output {unknown[0]!r}", code="unknown_output"
        )
    if len(set(wanted)) != len(wanted):
        raise BadRequest("an output is requested twice", code="invalid_infer_request")


def request_timeout_s(parameters: dict[str, Any], deadline_s: float | None) -> float | None:
    """The request's `timeout` parameter or the transport's deadline, whichever is
    sooner (None: the model's or the service's default applies)."""
    timeout_us = int_parameter(parameters, "timeout")
    given = [t for t in (timeout_us / 1e6 if timeout_us else None, deadline_s) if t is not None]
    return min(given) if given else None


async def infer(
    svc: Services,
    served: ServedModel,
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any],
    wanted: list[str] | None = None,
    *,
    deadline_s: float | None = None,
) -> dict[str, np.ndarray]:
    """Check the inputs, run them through the model's batcher and answer the outputs
    `wanted` (None: every output), in that order. `deadline_s`: the time the
    transport leaves (a gRPC deadline) as the batcher's timeout."""
    check_inputs(served, inputs)
    check_outputs(served, wanted)
    result = await svc.models.infer(
        served.name,
        inputs,
        priority=int_parameter(parameters, "priority") or None,
        timeout_s=request_timeout_s(parameters, deadline_s),
    )
    if wanted is None:
        return result.outputs
    # checked above; asked again as a reload between the check and the run can have
    # put a version with other outputs in service
    unknown = [name for name in wanted if name not in result.outputs]
    if unknown:
        raise BadRequest(
            f"model {served.name!r} has no output {unknown[0]!r}", code="unknown_output"
        )
    return {name: result.outputs[name] for name in wanted}
