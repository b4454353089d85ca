"""KServe v2 over gRPC: Triton's `inference.GRPCInferenceService` on
AIDX_GRPC_PORT, so `tritonclient.grpc` works against aidx unchanged.

A thin transport over kserve_protocol.py, which `/v2` over HTTP uses too: the same
models, batcher, input checks, request parameters (`priority`, `timeout` in us) and
errors. The API key comes in the metadata under the HTTP header's names, lower case
(`authorization: Bearer KEY` or `x-api-key: KEY`); the call's gRPC deadline bounds
the batcher's timeout. Each engine error kind has its gRPC status in `GRPC_STATUS`,
as Triton maps its own, with the stable `code` in the trailing metadata
`aidx-error-code`. Calls are counted in `aidx_requests_total` under their method name
and status code name. The server runs on the app's event loop, started and stopped by
its lifespan."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from aidx.inference.errors import AidxError, ErrorKind
from aidx.service import grpc_codec, kserve_protocol
from aidx.service.auth import Principal, key_in
from aidx.service.container import Services

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
Code = grpc.StatusCode

GRPC_STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.bad_request: Code.INVALID_ARGUMENT,
    ErrorKind.unauthorized: Code.UNAUTHENTICATED,
    ErrorKind.forbidden: Code.PERMISSION_DENIED,
    ErrorKind.not_found: Code.NOT_FOUND,
    ErrorKind.conflict: Code.FAILED_PRECONDITION,
    ErrorKind.payload_too_large: Code.RESOURCE_EXHAUSTED,
    ErrorKind.unsupported_media_type: Code.INVALID_ARGUMENT,
    ErrorKind.unprocessable: Code.INVALID_ARGUMENT,
    ErrorKind.queue_full: Code.UNAVAILABLE,  # Triton: "exceeds maximum queue size"
    ErrorKind.internal: Code.INTERNAL,
    ErrorKind.upstream_error: Code.UNAVAILABLE,
    ErrorKind.unavailable: Code.UNAVAILABLE,
    ErrorKind.deadline_exceeded: Code.DEADLINE_EXCEEDED,
}

_MODEL_ROLES = frozenset(kserve_protocol.MODEL_ROLES)
Servicer = TypeVar("Servicer", bound="KServeServicer")
Handler = Callable[[Servicer, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _trailers(exc: AidxError) -> tuple[tuple[str, str], ...]:
    retry = exc.headers.get("Retry-After")
    return (("aidx-error-code", exc.code),) + ((("retry-after", retry),) if retry else ())


def rpc(handler: Handler[Servicer]) -> Handler[Servicer]:
    """An RPC with the service's error mapping and request count: an AidxError ends
    the call with its kind's status and message; anything else is logged and the
    client gets INTERNAL without the traceback."""
    route = f"/{SERVICE}/{handler.__name__}"

    @functools.wraps(handler)
    async def guarded(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        code = Code.OK
        try:
            return await handler(self, request, context)
        except AidxError as exc:
            code = GRPC_STATUS[exc.kind]
            if exc.kind in (ErrorKind.internal, ErrorKind.upstream_error):
                log.warning("%s -> %s %s", route, code.name, exc.code)
            await context.abort(code, exc.message, trailing_metadata=_trailers(exc))
        except asyncio.CancelledError:  # the client went away or its deadline passed
            code = Code.CANCELLED
            raise
        except Exception:
            code = Code.INTERNAL
            log.exception("unhandled error on %s", route)
            await context.abort(code, "internal error; see the server log")
        finally:
            self._counter(route, code).inc()

    return guarded


def peer_host(peer: str | None) -> str:
    """The client's address from gRPC's peer string ('ipv4:127.0.0.1:5000',
    'ipv6:[::1]:5000', 'unix:/path'), as HTTP's request.client.host gives it."""
    if not peer:
        return "unknown"
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.partition("]")[0].lstrip("[")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or kind


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs `/v2` has over HTTP; the others (streaming, repository, shared memory,
    statistics, trace and log settings) answer UNIMPLEMENTED."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        # a counter per (method, status), found once: labels() on every call costs
        self._counters: dict[tuple[str, grpc.StatusCode], Counter] = {}

    def _counter(self, route: str, code: grpc.StatusCode) -> Counter:
        counter = self._counters.get((route, code))
        if counter is None:
            counter = self.svc.metrics.requests.labels(route, code.name)
            self._counters[(route, code)] = counter
        return counter

    def _authorize(self, context: grpc.aio.ServicerContext, rpc_name: str) -> Principal:
        """The same gate as HTTP: wrong keys throttled per client address, refusals audited."""
        metadata = dict(context.invocation_metadata() or ())
        client, resource = peer_host(context.peer()), f"gRPC {rpc_name}"
        gate = self.svc.access
        who = gate.authenticate_key(key_in(metadata), client, resource)
        gate.authorize_call(who, _MODEL_ROLES, client, resource)
        return who

    @rpc
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.svc.models.ready)

    @rpc
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**kserve_protocol.server_metadata())

    @rpc
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._authorize(context, "ModelReady")
        served = kserve_protocol.served_model(self.svc, request.name, request.version)
        return pb.ModelReadyResponse(ready=kserve_protocol.model_ready(served))

    @rpc
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._authorize(context, "ModelMetadata")
        served = kserve_protocol.served_model(self.svc, request.name, request.version)
        return pb.ModelMetadataResponse(**kserve_protocol.model_metadata(served))

    @rpc
    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._authorize(context, "ModelConfig")
        served = kserve_protocol.served_model(self.svc, request.name, request.version)
        return pb.ModelConfigResponse(config=served.entry.config)

    @rpc
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """An engineer's direct use of a model: recorded in the audit log, as over HTTP."""
        who = self._authorize(context, "ModelInfer")
        with self.svc.audit.access(
            actor=who.name,
            role=who.role.value,
            action="v2.infer",
            resource=f"model/{request.model_name}",
        ):
            return await self._infer(request, context)

    async def _infer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served = kserve_protocol.served_model(self.svc, request.model_name, request.model_version)
        outputs = await kserve_protocol.infer(
            self.svc,
            served,
            grpc_codec.decode_inputs(request),
            grpc_codec.parameters_of(request.parameters),
            grpc_codec.wanted_outputs(request),
            deadline_s=context.time_remaining(),
        )
        return grpc_codec.encode_response(request, served.name, str(served.entry.version), outputs)


class GrpcServer:
    """The gRPC listener of one app, on the app's event loop (AIDX_GRPC_PORT; None:
    none). A port that cannot be bound fails the start, as HTTP's does."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        settings = self.svc.settings
        if settings.grpc_port is None:
            return
        limit = settings.max_upload_bytes  # a larger message: RESOURCE_EXHAUSTED
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(self.svc), server
        )
        address = f"{settings.host}:{settings.grpc_port}"
        server.add_insecure_port(address)  # raises when the port is taken
        await server.start()
        self._server = server
        log.info("KServe v2 over gRPC on %s", address)

    async def stop(self) -> None:
        """Refuse new calls and let open ones finish, for up to AIDX_SHUTDOWN_TIMEOUT_S."""
        if self._server is not None:
            await self._server.stop(grace=self.svc.settings.shutdown_timeout_s)
            self._server = None
