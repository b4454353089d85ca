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
AIDX_TRITON_SHARED_MEMORY they travel through Triton's system shared memory, built
with tritonclient's own utilities: at load, a pool of regions (`RegionPool`, one per
request in flight, each holding a full batch's inputs and outputs) is created and
registered with the server; `close` unregisters and destroys them at stop. Regions are
named by replica (host and port) and model, so a start clears what a killed run of
the same replica left registered. A server that refuses them (another host, a
restricted shared-memory API) keeps the model out of service with
`triton_shm_unusable`: shared memory was asked for, and a silent fall-back to the
body would hide the misconfiguration. A server that restarted has forgotten them:
they are registered again when a request finds them missing.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException, triton_to_np_dtype
from tritonclient.utils import shared_memory as shm

from aidx.inference.dtypes import config_to_kserve, kserve_of
from aidx.inference.errors import AidxError, ErrorKind, ModelUnavailable
from aidx.inference.repository import ModelEntry, model_config_pb2
from aidx.inference.settings_sections import TritonProtocol, TritonSettings
from aidx.inference.triton_shm import (
    Region,
    RegionPool,
    TritonSharedMemoryUnusable,
    check_room,
    region_layout,
    region_prefix,
)

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

    kind = ErrorKind.upstream_error
    code = "triton_error"


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


def region_count(config: Any, options: TritonOptions) -> int:
    """One region per request in flight: as many as the batcher's executors
    (serving.batcher_config: instance_group's copies, at least triton.concurrency)."""
    copies = sum(int(g.count) or 1 for g in config.instance_group) or 1
    return max(copies, options.concurrency)


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
        self._pool: RegionPool | None = None
        self._pool_lock = threading.Lock()  # one re-registration at a time
        self._registrations = 0  # re-registrations so far: a failed batch retries after one
        self.check()
        if options.shared_memory:
            self._pool = self._open_regions()

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

    # -- shared memory ------------------------------------------------------------
    def _open_regions(self) -> RegionPool | None:
        layout = region_layout(self.entry.config)
        if layout is None:
            log.warning(
                "model %s has a tensor without a size bound (a variable dim or BYTES): "
                "its tensors travel in the request body, not in shared memory",
                self.name,
            )
            return None
        count = region_count(self.entry.config, self.options)
        check_room(count * layout.byte_size)
        pool = RegionPool(f"{self.options.region_prefix}-{self.name}", layout, count)
        try:
            self._register(pool)
        except BaseException:
            pool.destroy()
            raise
        log.info(
            "model %s: %d shared-memory regions of %.1f MiB registered with Triton",
            self.name,
            count,
            layout.byte_size / 2**20,
        )
        return pool

    def _registered(self, client: Any) -> dict[str, str]:
        """name -> key of the server's system shared-memory regions."""
        status = client.get_system_shared_memory_status(**self._kwargs())
        if self._grpc:
            return {name: r.key for name, r in status.regions.items()}
        return {r["name"]: r["key"] for r in status}

    def _unregister(self, name: str, client: Any) -> None:
        client.unregister_system_shared_memory(name, **self._kwargs())

    def _register_one(self, region: Region, byte_size: int, client: Any) -> None:
        client.register_system_shared_memory(region.name, region.key, byte_size, **self._kwargs())

    def _register(self, pool: RegionPool) -> bool:
        """Register what the server lacks of the pool, first unregistering this
        replica's names that hold another key (left by a killed run). True when any
        was missing. A refusal: TritonSharedMemoryUnusable."""
        try:
            have = self._call("shared-memory status", self._registered)
            keys = {r.name: r.key for r in pool.regions}
            stale = [n for n, k in have.items() if pool.owns(n) and keys.get(n) != k]
            for name in stale:
                self._call("shared-memory unregister", partial(self._unregister, name))
            missing = [r for r in pool.regions if have.get(r.name) != r.key]
            for region in missing:
                register = partial(self._register_one, region, pool.layout.byte_size)
                self._call("shared-memory register", register)
        except TritonError as exc:
            raise TritonSharedMemoryUnusable(
                f"{exc}. AIDX_TRITON_SHARED_MEMORY needs aidx and Triton on one host, "
                "sharing /dev/shm, and the server's shared-memory API open to aidx"
            ) from None
        if stale:
            log.warning("model %s: unregistered %d stale regions", self.name, len(stale))
        return bool(missing)

    def _infer_in(self, pool: RegionPool, region: Region, inputs: dict[str, np.ndarray]) -> Any:
        layout = pool.layout
        tensors = []
        for name, array in inputs.items():
            tensor = self._lib.InferInput(name, list(array.shape), kserve_of(array))
            tensor.set_shared_memory(region.name, array.nbytes, offset=layout.inputs[name][0])
            tensors.append(tensor)
        wanted = []
        for name in self.output_names:
            output = self._lib.InferRequestedOutput(name)
            offset, size = layout.outputs[name]
            output.set_shared_memory(region.name, size, offset=offset)
            wanted.append(output)
        return self._call(
            "infer",
            lambda c: c.infer(
                self.name, tensors, model_version=self.version, outputs=wanted, **self._kwargs()
            ),
        )

    def _read_out(self, pool: RegionPool, region: Region, result: Any) -> dict[str, np.ndarray]:
        outputs = {}
        for name in self.output_names:
            spec = result.get_output(name)
            if spec is None:
                raise TritonError(f"Triton's answer for {self.name!r} has no output {name!r}")
            datatype, shape = (
                (spec.datatype, list(spec.shape))
                if self._grpc
                else (spec["datatype"], spec["shape"])
            )
            array = shm.get_contents_as_numpy(
                region.handle, triton_to_np_dtype(datatype), shape, pool.layout.outputs[name][0]
            )
            outputs[name] = array.copy()  # the region serves the next batch
        return outputs

    def _run_in(
        self, pool: RegionPool, region: Region, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            shm.set_shared_memory_region(
                region.handle, [np.ascontiguousarray(array)], offset=pool.layout.inputs[name][0]
            )
        seen = self._registrations
        try:
            result = self._infer_in(pool, region, inputs)
        except TritonError:
            # A restarted server has forgotten the regions: register them again (or
            # see that another batch just did) and retry once; other refusals stand.
            with self._pool_lock:
                if seen == self._registrations:  # none since this batch began
                    if not self._register(pool):
                        raise
                    self._registrations += 1
            result = self._infer_in(pool, region, inputs)
        return self._read_out(pool, region, result)

    def close(self) -> None:
        """Unregister and destroy the regions once the batches using them are done
        (later batches travel in the body). A server that cannot be told keeps them
        registered until this replica's next start clears them."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not pool.drain(self.options.timeout_s):
            log.warning("model %s: a batch still held a shared-memory region at stop", self.name)
        try:  # once each, no retries: a stop must not wait on a server that is gone
            for region in pool.regions:
                self._unregister(region.name, self._client())
        except (InferenceServerException, OSError, http.client.HTTPException) as exc:
            log.warning("model %s: unregistering its regions failed: %s", self.name, exc)
        finally:
            self._drop_client()
            pool.destroy()

    # -- inference ----------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pool = self._pool
        region = pool.take() if pool is not None and pool.layout.fits(inputs) else None
        if pool is None or region is None:  # off, stopping, all regions busy, or too big
            return self._run_body(inputs)
        try:
            return self._run_in(pool, region, inputs)
        finally:
            pool.give(region)

    def _run_body(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
