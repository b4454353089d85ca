"""A Triton Inference Server as the model runtime (AIDX_BACKEND=triton).

The same `run(inputs) -> outputs` as the in-process onnxruntime backend, so the
batcher and the pipelines do not know where a model runs. At load, the server's
model metadata and config are read and checked against the local repository entry
(config.pbtxt and card): input and output names, datatypes, shapes and
max_batch_size must agree, or the model stays out of service with the reason. The
platform/backend is not compared: the same tensors served by another backend (e.g.
PyTriton's `python`, as in the tests) are the same model to aidx. The
server's model readiness is re-read every `triton.poll_s` (`follow_readiness`).

Failures: a connection error, a timeout or UNAVAILABLE (gRPC) / 503 (HTTP) is retried
`triton.retries` times with a growing pause, then answered 503 `triton_unavailable`;
any other refusal by the server is 502 `triton_error` (at load: the model stays out
with `triton_refused`, e.g. a wrong API key). Readiness is read over a new connection
each time (`ready`), so a server that has begun to shut down is out at once.

Transport: by default tensors travel in the request body (binary over HTTP). With
AIDX_TRITON_SHARED_MEMORY they travel through Triton's system shared memory
(triton_shm_transport.py); a server that refuses it keeps the model out of service
with `triton_shm_unusable`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import json_format

from aidx.inference.dtypes import config_to_kserve, kserve_of
from aidx.inference.errors import ModelUnavailable
from aidx.inference.repository import ModelEntry, model_config_pb2
from aidx.inference.settings_sections import TritonProtocol, TritonSettings
from aidx.inference.triton_connection import TritonConnection, TritonError, TritonUnavailable
from aidx.inference.triton_shm import region_prefix
from aidx.inference.triton_shm_transport import SharedMemoryTransport

if TYPE_CHECKING:
    from aidx.inference.serving import ModelService

log = logging.getLogger(__name__)

PROVIDER = "triton"


class TritonModelMismatch(ModelUnavailable):
    """The server's model is not the one the local repository describes."""

    code = "triton_model_mismatch"


_DEFAULTS = TritonSettings()  # one default per value: the settings' (AIDX_TRITON_*)


@dataclass(frozen=True)
class TritonOptions:
    url: str
    protocol: TritonProtocol = _DEFAULTS.protocol
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = _DEFAULTS.timeout_s
    retries: int = _DEFAULTS.retries
    retry_backoff_s: float = _DEFAULTS.retry_backoff_s
    concurrency: int = _DEFAULTS.concurrency
    shared_memory: bool = _DEFAULTS.shared_memory
    # Names this replica's regions on the server: stable across its restarts (host and
    # port), so a start can clear what a killed run left registered.
    region_prefix: str = field(default_factory=lambda: region_prefix(f"pid{os.getpid()}"))

    @classmethod
    def from_settings(cls, triton: TritonSettings, *, port: int) -> TritonOptions:
        """From the settings' Triton section; `port` (the service's) names the regions."""
        assert triton.url is not None  # Settings refuses triton without a URL
        return cls(
            url=triton.url,
            protocol=triton.protocol,
            headers=dict(triton.headers),
            timeout_s=triton.timeout_s,
            retries=triton.retries,
            retry_backoff_s=triton.retry_backoff_s,
            concurrency=triton.concurrency,
            shared_memory=triton.shared_memory,
            region_prefix=region_prefix(f"port{port}"),
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
        self._conn = TritonConnection(self.name, options)
        self._shm: SharedMemoryTransport | None = None
        self.check()
        if options.shared_memory:
            self._shm = SharedMemoryTransport.open(self._conn, entry)

    # -- model checks and readiness -----------------------------------------------
    def _config(self, client: Any) -> Any:
        kwargs = self._conn.kwargs()
        if self._conn.grpc:
            answer = client.get_model_config(self.name, self.version, as_json=True, **kwargs)
            raw = answer["config"]
        else:
            raw = client.get_model_config(self.name, self.version, **kwargs)
        return json_format.ParseDict(
            raw, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )

    def _metadata(self, client: Any) -> dict[str, Any]:
        kwargs = self._conn.kwargs()
        if self._conn.grpc:
            kwargs["as_json"] = True
        return dict(client.get_model_metadata(self.name, self.version, **kwargs))

    def check(self) -> None:
        """The server has this model, ready, and it matches the local entry."""
        try:
            metadata = self._conn.call("metadata", self._metadata)
            config = self._conn.call("config", self._config)
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
        self._conn.drop_client()
        try:
            return bool(
                self._conn.call(
                    "readiness",
                    lambda c: c.is_model_ready(self.name, self.version, **self._conn.kwargs()),
                )
            )
        except (TritonUnavailable, TritonError):
            return False
        finally:
            self._conn.drop_client()

    def close(self) -> None:
        """Unregister and destroy the shared-memory regions, if any (later batches
        travel in the body)."""
        transport, self._shm = self._shm, None
        if transport is not None:
            transport.close(self.options.timeout_s)

    # -- inference ----------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        transport = self._shm
        region = transport.take(inputs) if transport is not None else None
        if transport is None or region is None:  # off, stopping, all regions busy, or too big
            return self._run_body(inputs)
        try:
            return transport.run(region, inputs)
        finally:
            transport.give(region)

    def _run_body(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def infer(client: Any) -> Any:
            tensors = []
            for name, array in inputs.items():
                tensor = self._conn.lib.InferInput(name, list(array.shape), kserve_of(array))
                if self._conn.grpc:
                    tensor.set_data_from_numpy(np.ascontiguousarray(array))
                else:
                    tensor.set_data_from_numpy(np.ascontiguousarray(array), binary_data=True)
                tensors.append(tensor)
            if self._conn.grpc:
                wanted = [self._conn.lib.InferRequestedOutput(n) for n in self.output_names]
            else:
                wanted = [
                    self._conn.lib.InferRequestedOutput(n, binary_data=True)
                    for n in self.output_names
                ]
            return client.infer(
                self.name,
                tensors,
                model_version=self.version,
                outputs=wanted,
                **self._conn.kwargs(),
            )

        result = self._conn.call("infer", infer)
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
