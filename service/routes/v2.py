"""Open Inference Protocol (KServe v2) as Triton speaks it, so tritonclient and
perf_analyzer work against aidx unchanged. Requests go through the same batcher
as the pipelines. Triton request parameters `priority` and `timeout` (us) apply.
The protocol's logic is in kserve_protocol.py, shared with gRPC; this is the HTTP
transport only."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from google.protobuf import json_format

from aidx.inference.errors import BadRequest
from aidx.inference.serving import ServedModel
from aidx.service import kserve, kserve_protocol
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import ANALYSIS, AUTHED, errors
from aidx.service.uploads import read_body

router = APIRouter(prefix="/v2")
engineers = require(*kserve_protocol.MODEL_ROLES)
_served = kserve_protocol.served_model
# The model routes: a key, and a model (and version) in service.
MODEL_ROUTE = {**AUTHED, **errors(404)}
INFER_ROUTE = {**MODEL_ROUTE, **ANALYSIS, **errors(502)}


async def infer(
    request: Request,
    name: str,
    version: str | None = None,
    who: Principal = Depends(engineers),
) -> Response:
    """An engineer's direct use of a model: recorded in the audit log."""
    svc = await services(request)
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="v2.infer", resource=f"model/{name}"
    ):
        return await _infer(request, _served(svc, name, version), svc)


class InferRoute(APIRoute):
    """The infer route, called as FastAPI would call it, without its per-request
    dependency solving (about a tenth of the front end's CPU on this, the hottest route):
    the parameters' strings as they are and the caller from the same `engineers`
    dependency the signature declares (and the schema shows); its refusals and the
    endpoint's errors go to the app's handlers as any route's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handler(request: Request) -> Response:
            path = request.path_params
            # `version`: in the path, or (the unversioned path) a query parameter
            version = path.get("version") or request.query_params.get("version")
            return await infer(request, path["name"], version, await engineers(request))

        return handler


def add_infer_routes(app: FastAPI) -> None:
    """The infer routes on the app's own router, before any router is included: routes
    are matched in order, each passed on the way costs (twice: FastAPI matches, then
    selects), and an included router adds its own layers of matching and handling."""
    for path in ("/models/{name}/infer", "/models/{name}/versions/{version}/infer"):
        app.router.add_api_route(
            router.prefix + path,
            infer,
            methods=["POST"],
            responses=INFER_ROUTE,
            route_class_override=InferRoute,
        )


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return kserve_protocol.server_metadata()


# Triton answers its health routes by status alone, with empty bodies, and
# tritonclient reads only the status: the schema says so (no content), as it is.
_STATUS_ONLY: dict[int | str, dict[str, Any]] = {200: {"description": "yes (empty body)"}}


@router.get("/health/live", response_class=Response, responses=_STATUS_ONLY)
async def live() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready",
    response_class=Response,
    responses={**_STATUS_ONLY, 503: {"description": "not ready (empty body)"}},
)
async def ready(svc: Services = Depends(services)) -> Response:
    return Response(status_code=200 if svc.models.ready else 503)


@router.get("/models/{name}", responses=MODEL_ROUTE)
@router.get("/models/{name}/versions/{version}", responses=MODEL_ROUTE)
async def model_metadata(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    return kserve_protocol.model_metadata(_served(svc, name, version))


@router.get("/models/{name}/config", responses=MODEL_ROUTE)
@router.get("/models/{name}/versions/{version}/config", responses=MODEL_ROUTE)
async def model_config(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    config = _served(svc, name, version).entry.config
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


_MODEL_READY: dict[int | str, dict[str, Any]] = {
    **_STATUS_ONLY,
    **MODEL_ROUTE,
    400: {"description": "the model is not ready (empty body)"},
}


@router.get("/models/{name}/ready", response_class=Response, responses=_MODEL_READY)
@router.get(
    "/models/{name}/versions/{version}/ready", response_class=Response, responses=_MODEL_READY
)
async def model_ready(
    name: str,
    version: str | None = None,
    _: Principal = Depends(engineers),
    svc: Services = Depends(services),
) -> Response:
    ready = kserve_protocol.model_ready(_served(svc, name, version))
    return Response(status_code=200 if ready else 400)


def _header_length(value: str | None) -> int | None:
    """The JSON header's length in bytes: at most 18 ASCII digits (str.isdigit() also
    takes '²', and int() fails on either that or thousands of digits)."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise BadRequest(f"{kserve.HEADER_LENGTH} must be an integer", code="invalid_infer_request")
    return int(value)


async def _infer(request: Request, served: ServedModel, svc: Services) -> Response:
    body = await read_body(request, svc.settings.max_upload_bytes)
    length = request.headers.get(kserve.HEADER_LENGTH)
    parsed = kserve.parse_request(body, _header_length(length))
    wanted = None if parsed.outputs is None else [o["name"] for o in parsed.outputs]
    outputs = await kserve_protocol.infer(svc, served, parsed.inputs, parsed.parameters, wanted)
    content, header_length = kserve.encode_response(
        served.name, str(served.entry.version), parsed, outputs
    )
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={kserve.HEADER_LENGTH: str(header_length)},
    )
