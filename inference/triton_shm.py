"""Triton's system shared memory for aidx's Triton backend (runtime_triton.py): the
regions of one model, built with tritonclient's own utilities, and their layout (one
batch's inputs and outputs at fixed offsets, bounded by config.pbtxt)."""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import secrets
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.utils import shared_memory as shm

from aidx.inference.dtypes import KSERVE_TO_NUMPY, config_to_kserve
from aidx.inference.errors import ModelUnavailable
from aidx.inference.repository import model_config_pb2

log = logging.getLogger(__name__)
_SHM_DIR = "/dev/shm"
_ALIGN_BYTES = 64  # each tensor starts on a cache line


class TritonSharedMemoryUnusable(ModelUnavailable):
    """Shared memory was asked for and cannot be used: the server refused the regions
    (not on this host, or its shared-memory API is restricted), or this host has no
    room for them."""

    code = "triton_shm_unusable"


def region_prefix(tag: str) -> str:
    """aidx-<host>-<tag>: another replica sharing the Triton host has another name."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    return f"aidx-{host}-{tag}"


@dataclass(frozen=True)
class RegionLayout:
    """Where each tensor lies in one region: name -> (offset, byte size) for a whole
    batch, inputs and outputs apart."""

    inputs: dict[str, tuple[int, int]]
    outputs: dict[str, tuple[int, int]]
    byte_size: int

    def fits(self, inputs: dict[str, np.ndarray]) -> bool:
        return inputs.keys() == self.inputs.keys() and all(
            a.nbytes <= self.inputs[n][1] for n, a in inputs.items()
        )


def region_layout(config: Any) -> RegionLayout | None:
    """The bound of one batch from config.pbtxt: max_batch_size x each tensor's bytes.
    None when a tensor has none (a variable dim, BYTES): that model keeps the body."""
    batch = max(int(config.max_batch_size), 1)
    end = 0
    places: list[dict[str, tuple[int, int]]] = [{}, {}]
    for place, specs in zip(places, (config.input, config.output), strict=True):
        for spec in specs:
            dtype = KSERVE_TO_NUMPY.get(
                config_to_kserve(model_config_pb2.DataType.Name(spec.data_type))
            )
            if dtype is None or any(int(d) < 0 for d in spec.dims):
                return None
            size = batch * math.prod(int(d) for d in spec.dims) * np.dtype(dtype).itemsize
            place[spec.name] = (end, size)
            end += -(-size // _ALIGN_BYTES) * _ALIGN_BYTES
    return RegionLayout(inputs=places[0], outputs=places[1], byte_size=end)


def check_room(byte_size: int) -> None:
    """A tmpfs that is too small accepts the regions and kills the process (SIGBUS)
    when a batch is written: refuse them at load instead. Only as good as the free
    space now; other models' regions fill in as they are used."""
    try:
        stats = os.statvfs(_SHM_DIR)
    except OSError:
        return  # no /dev/shm to measure: creating the regions will tell
    free = stats.f_bavail * stats.f_frsize
    if free < byte_size:
        raise TritonSharedMemoryUnusable(
            f"{_SHM_DIR} has {free / 2**20:.0f} MiB free, the shared-memory regions need "
            f"{byte_size / 2**20:.0f} MiB: give it room or set AIDX_TRITON_SHARED_MEMORY=false"
        )


@dataclass(frozen=True)
class Region:
    name: str  # the server's name for it
    key: str  # the shared-memory object's key on this host
    handle: Any  # tritonclient's handle


def _destroy(regions: list[Region]) -> None:
    for region in regions:
        try:
            shm.destroy_shared_memory_region(region.handle)
        except Exception:  # e.g. a buffer still exported by a request that hung
            log.warning("destroying shared-memory region %s failed", region.name, exc_info=True)


class RegionPool:
    """The regions of one model, created with tritonclient's shared_memory utilities;
    a request takes one and gives it back. Destroyed by `destroy`, or when the pool is
    dropped (a model whose load failed after its regions were made)."""

    def __init__(self, prefix: str, layout: RegionLayout, count: int) -> None:
        self.layout = layout
        self.prefix = prefix
        run = secrets.token_hex(4)  # new keys each run: never a killed run's object
        self.regions: list[Region] = []
        try:
            for i in range(count):
                name = f"{prefix}-{i}"
                handle = shm.create_shared_memory_region(
                    name, f"/{name}-{run}", layout.byte_size, create_only=True
                )
                self.regions.append(Region(name, f"/{name}-{run}", handle))
        except shm.SharedMemoryException as exc:
            _destroy(self.regions)
            raise TritonSharedMemoryUnusable(
                f"cannot create shared-memory regions in {_SHM_DIR}: {exc.__cause__ or exc}"
            ) from None
        self._finalizer = weakref.finalize(self, _destroy, list(self.regions))
        self._free: queue.SimpleQueue[Region] = queue.SimpleQueue()
        for region in self.regions:
            self._free.put(region)
        self._closed = False

    def owns(self, name: str) -> bool:
        """One of this replica's names for the model, from this run or an earlier one
        (which may have had more regions)."""
        return re.fullmatch(re.escape(self.prefix) + r"-\d+", name) is not None

    def take(self) -> Region | None:
        """A free region; None when closing or all are in use (never waits)."""
        if self._closed:
            return None
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return None

    def give(self, region: Region) -> None:
        self._free.put(region)

    def drain(self, timeout_s: float) -> bool:
        """Stop lending and wait for every region to come back."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        back = 0
        while back < len(self.regions):
            try:
                self._free.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return False
            back += 1
        return True

    def destroy(self) -> None:
        self._finalizer()
