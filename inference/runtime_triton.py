"""A Triton Inference Server as the model runtime (AIDX_BACKEND=triton).

The same `run(inputs) -> outputs` as the in-process onnxruntime backend, so the
batcher and the pipelines do not know where a model runs. At load, the server's
model metadata and config are read and checked against the local repository entry
(config.pbtxt and card): input and output names, datatypes, shapes and
max_batch_size must agree, or the model stays out of service with the reason. The
platform/backend is not compared: the same tensors served by another backend (e.g.
PyTriton's `python`, as in the tests) are the same model to aidx. The
server's model readiness is re-read every `triton_poll_s` (`follow_readiness`).

Failures: a connection error, a timeout or UNAVAILABLE (gRPC) / 503 (HTTP) is retried
`triton_retries` times with a growing pause, then answered 503 `triton_unavailable`;
any other refusal by the server is 502 `triton_error` (at load: the model stays out
with `triton_refused`, e.g. a wrong API key). Readiness is read over a new connection
each time (`ready`), so a server that has begun to shut down is out at once.
Shared-memory transport is not implemented (tensors travel in the request body,
binary over HTTP).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from aidx.inference.dtypes import config_to_kserve, kserve_of
from aidx.inference.errors import AidxError, ModelUnavailable
from aidx.inference.repository import ModelEntry, model_config_pb2
from aidx.inference.settings import Settings, TritonProtocol

if TYPE_CHECKING:
    from aidx.inference.serving import ModelService

log = logging.getLogger(__name__)
T = TypeVar("T")

PROVIDER = "triton"
_RETRYABLE_STATUSES = {"503", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}


class TritonUnavailable(ModelUnavailable):
    """The server cannot be reached or says it cannot serve now (503)."""

    code = "triton_unavailable"


class TritonModelMismatch(ModelUnavailable):
    """The server's model is not the one the local repository describes."""

    code = "triton_model_mismatch"


class TritonError(AidxError):
    """The server refused a request for another reason (a bad gateway for aidx)."""

    status = 502
    code = "triton_error"


@dataclass(frozen=True)
class TritonOptions:
    url: str
    protocol: TritonProtocol = TritonProtocol.http
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    retries: int = 2
    retry_backoff_s: float = 0.2
    concurrency: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonOptions:
        assert settings.triton_url is not None  # Settings refuses triton without a URL
        return cls(
            url=settings.triton_url,
            protocol=settings.triton_protocol,
            headers=dict(settings.triton_headers),
            timeout_s=settings.triton_timeout_s,
            retries=settings.triton_retries,
            retry_backoff_s=settings.triton_retry_backoff_s,
            concurrency=settings.triton_concurrency,
        )


def _tensor_specs(specs: Any, batched: bool) -> dict[str, tuple[str, list[int]]]:
    """name -> (KServe datatype, shape with -1 for the batch) from a ModelConfig."""
    return {
        s.name: (
            config_to_kserve(model_config_pb2.DataType.Name(s.data_type)),
            ([-1] if batched else []) + [int(d) for d in s.dims],
        )
        for s in specs
    }


def _metadata_specs(tensors: list[dict[str, Any]]) -> dict[str, tuple[str, list[int]]]:
    return {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in tensors}


def compare(entry: ModelEntry, metadata: dict[str, Any], config: Any) -> list[str]:
    """How the server's model differs from the local entry (empty: it does not)."""
    local = entry.config
    batched = local.max_batch_size > 0
    problems = []
    versions = [str(v) for v in metadata.get("versions", [])]
    if versions and str(entry.version) not in versions:
        problems.append(f"version {entry.version} is not served (server has {versions})")
    if int(config.max_batch_size) != int(local.max_batch_size):
        problems.append(
            f"max_batch_size is {config.max_batch_size} on the server, {local.max_batch_size} here"
        )
    for kind, specs, remote in (
        ("input", local.input, metadata.get("inputs", [])),
        ("output", local.output, metadata.get("outputs", [])),
    ):
        want, have = _tensor_specs(specs, batched), _metadata_specs(remote)
        if set(want) != set(have):
            problems.append(f"{kind}s are {sorted(have)} on the server, {sorted(want)} here")
            continue
        for name, (dtype, shape) in want.items():
            if have[name] != (dtype, shape):
                problems.append(
                    f"{kind} {name!r} is {have[name][0]}{have[name][1]} on the server, "
                    f"{dtype}{shape} here"
                )
    return problems


class TritonModel:
    """One model on a Triton server. `run` is called from the batcher's executor
    threads: each thread gets its own client (tritonclient's are not thread-safe)."""

    backend = "triton"
    provider = PROVIDER
    device = "remote"

    def __init__(self, entry: ModelEntry, options: TritonOptions) -> None:
        self.entry = entry
        self.options = options
        self.name = entry.name
        self.version = str(entry.version)
        self.output_names = [o.name for o in entry.config.output]
        self._grpc = options.protocol is TritonProtocol.grpc
        self._lib: Any = grpcclient if self._grpc else httpclient
        # gRPC metadata keys must be lower case; HTTP headers do not care.
        self._headers = {k.lower(): v for k, v in options.headers.items()}
        self._local = threading.local()
        self.check()

    # -- connection ---------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            scheme, _, address = self.options.url.rpartition("://")  # "host:port" expected
            ssl = scheme in ("https", "grpcs")
            if self._grpc:
                client = grpcclient.InferenceServerClient(address, ssl=ssl)
            else:
                client = httpclient.InferenceServerClient(
                    address,
                    ssl=ssl,
                    connection_timeout=self.options.timeout_s,
                    network_timeout=self.options.timeout_s,
                )
            self._local.client = client
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close; it is gone anyway
                log.debug("closing a Triton client failed", exc_info=True)

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self._headers}
        if self._grpc:
            kwargs["client_timeout"] = self.options.timeout_s
        return kwargs

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """`fn(client)`, retried on connection errors, timeouts and UNAVAILABLE."""
        attempts = self.options.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn(self._client())
            except InferenceServerException as exc:
                status = str(exc.status())
                if status not in _RETRYABLE_STATUSES:
                    raise TritonError(
                        f"Triton refused {what} for {self.name!r} ({status}): {exc.message()}"
                    ) from None
                reason = f"{status} {exc.message()}"
            # refused, reset, timed out; HTTPException: e.g. geventhttpclient's
            # HTTPConnectionClosed when the server drops a pooled keep-alive connection.
            except (OSError, TimeoutError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._drop_client()
            if attempt < attempts:
                time.sleep(self.options.retry_backoff_s * 2 ** (attempt - 1))
        log.warning("Triton at %s: %s failed %d times", self.options.url, what, attempts)
        raise TritonUnavailable(
            f"the Triton server at {self.options.url} is unavailable for {self.name!r} "
            f"({what}: {reason})"
        )

    # -- model checks and readiness -----------------------------------------------
    def _config(self, client: Any) -> Any:
        kwargs = self._kwargs()
        if self._grpc:
            answer = client.get_model_config(self.name, self.version, as_json=True, **kwargs)
            raw = answer["config"]
        else:
            raw = client.get_model_config(self.name, self.version, **kwargs)
        return json_format.ParseDict(
            raw, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )

    def _metadata(self, client: Any) -> dict[str, Any]:
        kwargs = self._kwargs()
        if self._grpc:
            kwargs["as_json"] = True
        return dict(client.get_model_metadata(self.name, self.version, **kwargs))

    def check(self) -> None:
        """The server has this model, ready, and it matches the local entry."""
        try:
            metadata = self._call("metadata", self._metadata)
            config = self._call("config", self._config)
        except TritonError as exc:  # e.g. 401/403: a wrong key; 404: no such model
            raise ModelUnavailable(str(exc), code="triton_refused") from None
        problems = compare(self.entry, metadata, config)
        if problems:
            raise TritonModelMismatch(
                f"the Triton server's {self.name!r} differs from the local repository: "
                + "; ".join(problems)
            )
        if not self.ready():
            raise TritonUnavailable(
                f"model {self.name!r} version {self.version} is not ready on the Triton "
                f"server at {self.options.url}"
            )

    def ready(self) -> bool:
        """The server's model readiness, asked over a new connection each time; False
        when the server cannot be reached. While Triton shuts down it keeps serving
        the keep-alive connections it has for its exit timeout (the model still says
        ready there) and refuses new ones: asked over a kept connection, the answer
        depended on which thread asked, and the model flapped back into service
        against a server that was going away."""
        self._drop_client()
        try:
            return bool(
                self._call(
                    "readiness",
                    lambda c: c.is_model_ready(self.name, self.version, **self._kwargs()),
                )
            )
        except (TritonUnavailable, TritonError):
            return False
        finally:
            self._drop_client()

    # -- inference ----------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def infer(client: Any) -> Any:
            tensors = []
            for name, array in inputs.items():
                tensor = self._lib.InferInput(name, list(array.shape), kserve_of(array))
                if self._grpc:
                    tensor.set_data_from_numpy(np.ascontiguousarray(array))
                else:
                    tensor.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
                tensors.append(tensor)
            if self._grpc:
                wanted = [self._lib.InferRequestedOutput(n) for n in self.output_names]
            else:
                wanted = [
                    self._lib.InferRequestedOutput(n, binary_data=True) for n in self.output_names
                ]
            return client.infer(
                self.name, tensors, model_version=self.version, outputs=wanted, **self._kwargs()
            )

        result = self._call("infer", infer)
        return {name: result.as_numpy(name) for name in self.output_names}


async def follow_readiness(service: ModelService, interval_s: float) -> None:
    """Keep each Triton-backed model's state in step with the server: out of service
    while the server says it is not ready (or cannot be reached), back when it is; a
    model that could not be reached at start-up is loaded as soon as it can be. A
    model whose server copy differs from the local entry stays out until a restart."""
    from aidx.inference.serving import ModelState

    while True:
        await asyncio.sleep(interval_s)
        for served in list(service.models.values()):
            runtime = served.runtime
            if runtime is None:
                if served.code == TritonUnavailable.code:
                    await service.load(served)
                continue
            if not isinstance(runtime, TritonModel):
                continue
            try:
                ready = await asyncio.to_thread(runtime.ready)
            except Exception:  # never let one odd failure end the loop for every model
                log.exception("reading %s's readiness from Triton failed", served.name)
                ready = False
            if ready and served.state is not ModelState.ready:
                served.state, served.reason, served.code = ModelState.ready, None, None
                log.info("model %s is ready again on Triton", served.name)
            elif not ready and served.state is ModelState.ready:
                service.mark_unavailable(
                    served,
                    f"not ready on the Triton server at {runtime.options.url}",
                    code=TritonUnavailable.code,
                )
