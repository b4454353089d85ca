"""Tensors through Triton's system shared memory (AIDX_TRITON_SHARED_MEMORY) instead
of the request body, for one model of runtime_triton.py.

At load, a pool of regions (`RegionPool` in triton_shm.py, one per request in flight,
each holding a full batch's inputs and outputs) is created and registered with the
server; `close` unregisters and destroys them at stop. Regions are named by replica
(host and port) and model, so a start clears what a killed run of the same replica
left registered. A server that refuses them (another host, a restricted shared-memory
API) keeps the model out of service with `triton_shm_unusable`: shared memory was
asked for, and a silent fall-back to the body would hide the misconfiguration. A
server that restarted has forgotten them: they are registered again when a request
finds them missing.
"""

from __future__ import annotations

import http.client
import logging
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from tritonclient.utils import InferenceServerException, triton_to_np_dtype
from tritonclient.utils import shared_memory as shm

from aidx.inference.dtypes import kserve_of
from aidx.inference.repository import ModelEntry
from aidx.inference.triton_connection import TritonConnection, TritonError
from aidx.inference.triton_shm import (
    Region,
    RegionPool,
    TritonSharedMemoryUnusable,
    check_room,
    region_layout,
)

if TYPE_CHECKING:
    from aidx.inference.runtime_triton import TritonOptions

log = logging.getLogger(__name__)


def region_count(config: Any, options: TritonOptions) -> int:
    """One region per request in flight: as many as the batcher's executors
    (serving.batcher_config: instance_group's copies, at least triton.concurrency)."""
    copies = sum(int(g.count) or 1 for g in config.instance_group) or 1
    return max(copies, options.concurrency)


class SharedMemoryTransport:
    """One model's regions, registered with its server, and inference through them:
    the caller takes a region, runs a batch in it, and gives it back."""

    def __init__(self, conn: TritonConnection, entry: ModelEntry, pool: RegionPool) -> None:
        self.conn = conn
        self.pool = pool
        self.name = entry.name
        self.version = str(entry.version)
        self.output_names = [o.name for o in entry.config.output]
        self._lock = threading.Lock()  # one re-registration at a time
        self._registrations = 0  # re-registrations so far: a failed batch retries after one

    @classmethod
    def open(cls, conn: TritonConnection, entry: ModelEntry) -> SharedMemoryTransport | None:
        """The model's regions, created and registered; None when a tensor has no size
        bound (its tensors travel in the request body)."""
        layout = region_layout(entry.config)
        if layout is None:
            log.warning(
                "model %s has a tensor without a size bound (a variable dim or BYTES): "
                "its tensors travel in the request body, not in shared memory",
                entry.name,
            )
            return None
        count = region_count(entry.config, conn.options)
        check_room(count * layout.byte_size)
        pool = RegionPool(f"{conn.options.region_prefix}-{entry.name}", layout, count)
        try:
            transport = cls(conn, entry, pool)
            transport.register()
        except BaseException:
            pool.destroy()
            raise
        log.info(
            "model %s: %d shared-memory regions of %.1f MiB registered with Triton",
            entry.name,
            count,
            layout.byte_size / 2**20,
        )
        return transport

    # -- registration -------------------------------------------------------------
    def _registered(self, client: Any) -> dict[str, str]:
        """name -> key of the server's system shared-memory regions."""
        status = client.get_system_shared_memory_status(**self.conn.kwargs())
        if self.conn.grpc:
            return {name: r.key for name, r in status.regions.items()}
        return {r["name"]: r["key"] for r in status}

    def _unregister(self, name: str, client: Any) -> None:
        client.unregister_system_shared_memory(name, **self.conn.kwargs())

    def _register_one(self, region: Region, byte_size: int, client: Any) -> None:
        kwargs = self.conn.kwargs()
        client.register_system_shared_memory(region.name, region.key, byte_size, **kwargs)

    def register(self) -> bool:
        """Register what the server lacks of the pool, first unregistering this
        replica's names that hold another key (left by a killed run). True when any
        was missing. A refusal: TritonSharedMemoryUnusable."""
        pool, call = self.pool, self.conn.call
        try:
            have = call("shared-memory status", self._registered)
            keys = {r.name: r.key for r in pool.regions}
            stale = [n for n, k in have.items() if pool.owns(n) and keys.get(n) != k]
            for name in stale:
                call("shared-memory unregister", partial(self._unregister, name))
            missing = [r for r in pool.regions if have.get(r.name) != r.key]
            for region in missing:
                register_one = partial(self._register_one, region, pool.layout.byte_size)
                call("shared-memory register", register_one)
        except TritonError as exc:
            raise TritonSharedMemoryUnusable(
                f"{exc}. AIDX_TRITON_SHARED_MEMORY needs aidx and Triton on one host, "
                "sharing /dev/shm, and the server's shared-memory API open to aidx"
            ) from None
        if stale:
            log.warning("model %s: unregistered %d stale regions", self.name, len(stale))
        return bool(missing)

    # -- inference ----------------------------------------------------------------
    def take(self, inputs: dict[str, np.ndarray]) -> Region | None:
        """A free region that holds `inputs`; None when stopping, all are busy, or the
        batch is too big (it travels in the body)."""
        return self.pool.take() if self.pool.layout.fits(inputs) else None

    def give(self, region: Region) -> None:
        self.pool.give(region)

    def _infer_in(self, region: Region, inputs: dict[str, np.ndarray]) -> Any:
        layout, lib, kwargs = self.pool.layout, self.conn.lib, self.conn.kwargs()
        tensors = []
        for name, array in inputs.items():
            tensor = lib.InferInput(name, list(array.shape), kserve_of(array))
            tensor.set_shared_memory(region.name, array.nbytes, offset=layout.inputs[name][0])
            tensors.append(tensor)
        wanted = []
        for name in self.output_names:
            output = lib.InferRequestedOutput(name)
            offset, size = layout.outputs[name]
            output.set_shared_memory(region.name, size, offset=offset)
            wanted.append(output)
        return self.conn.call(
            "infer",
            lambda c: c.infer(
                self.name, tensors, model_version=self.version, outputs=wanted, **kwargs
            ),
        )

    def _read_out(self, region: Region, result: Any) -> dict[str, np.ndarray]:
        outputs = {}
        for name in self.output_names:
            spec = result.get_output(name)
            if spec is None:
                raise TritonError(f"Triton's answer for {self.name!r} has no output {name!r}")
            datatype, shape = (
                (spec.datatype, list(spec.shape))
                if self.conn.grpc
                else (spec["datatype"], spec["shape"])
            )
            array = shm.get_contents_as_numpy(
                region.handle,
                triton_to_np_dtype(datatype),
                shape,
                self.pool.layout.outputs[name][0],
            )
            outputs[name] = array.copy()  # the region serves the next batch
        return outputs

    def run(self, region: Region, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through `region` (from `take`)."""
        for name, array in inputs.items():
            shm.set_shared_memory_region(
                region.handle,
                [np.ascontiguousarray(array)],
                offset=self.pool.layout.inputs[name][0],
            )
        seen = self._registrations
        try:
            result = self._infer_in(region, inputs)
        except TritonError:
            # A restarted server has forgotten the regions: register them again (or
            # see that another batch just did) and retry once; other refusals stand.
            with self._lock:
                if seen == self._registrations:  # none since this batch began
                    if not self.register():
                        raise
                    self._registrations += 1
            result = self._infer_in(region, inputs)
        return self._read_out(region, result)

    def close(self, timeout_s: float) -> None:
        """Unregister and destroy the regions once the batches using them are done.
        A server that cannot be told keeps them registered until this replica's next
        start clears them."""
        pool = self.pool
        if not pool.drain(timeout_s):
            log.warning("model %s: a batch still held a shared-memory region at stop", self.name)
        try:  # once each, no retries: a stop must not wait on a server that is gone
            for region in pool.regions:
                self._unregister(region.name, self.conn.client())
        except (InferenceServerException, OSError, http.client.HTTPException) as exc:
            log.warning("model %s: unregistering its regions failed: %s", self.name, exc)
        finally:
            self.conn.drop_client()
            pool.destroy()
