"""onnxruntime in-process: a pool of session copies per model, one per instance that
its `instance_group` asks for (gpu/providers.py `placements`: `count` per group, on
each listed GPU for KIND_GPU).

The batcher runs batches on several executor threads; `run` lends each call a session
no other thread holds, so instances run side by side, each with its own memory arena
and CUDA stream (InferenceSession.run releases the GIL). On the CPU the instances
share the cores: unless AIDX_CPU_THREADS_PER_INSTANCE says otherwise, each gets an
equal slice of them (`threads_per_instance`).

On CUDA/TensorRT a session runs through IO binding (AIDX_GPU_IO_BINDING, `run_bound`):
inputs are bound from host memory as they lie, outputs are allocated on the GPU and
copied back once. The same code runs with outputs bound on the CPU, which is how the
tests exercise it on machines without a GPU.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import onnxruntime as ort

from aidx.gpu.providers import (
    CPU,
    GpuOptions,
    Placement,
    active_provider,
    device_name,
    placements,
    requested_gpu,
    select_providers,
)
from aidx.inference.errors import BadRequest
from aidx.inference.repository import ModelEntry

log = logging.getLogger(__name__)
T = TypeVar("T")
Tensors = dict[str, np.ndarray]

# onnxruntime's type strings -> numpy dtypes (the ones our configs use).
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def session_options(threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads must not spin: the event loop and the HTTP parsing share
    # these cores, and a spinning pool starves them (long tail latencies).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_instance(threads: int, instances: int, cores: int | None = None) -> int:
    """intra-op threads for each of a model's `instances` sessions. A set value wins.
    Unset (0), one instance keeps onnxruntime's default (a thread per core); several
    split the cores, at least one each: N sessions each with a pool as large as the
    machine would oversubscribe it N times, and the instances would slow each other
    down (and the event loop with them) instead of running side by side."""
    if threads > 0 or instances <= 1:
        return threads
    return max(1, (cores or cpu_count()) // instances)


def run_bound(
    session: ort.InferenceSession,
    output_names: list[str],
    inputs: Tensors,
    device_type: str,
    device_id: int = 0,
) -> list[np.ndarray]:
    """One run through IO binding: inputs bound from host memory without a staging copy,
    outputs allocated by `device_type`'s allocator ('cuda', or 'cpu') and read back once."""
    binding = session.io_binding()
    for name, array in inputs.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(array))
    # Binding a host array to a CUDA session queues its copy to the device; wait for it.
    binding.synchronize_inputs()
    for name in output_names:
        binding.bind_output(name, device_type, device_id)
    session.run_with_iobinding(binding)  # by default ends with the device synchronised
    return list(binding.copy_outputs_to_cpu())


@dataclass(frozen=True)
class Instance:
    """One session copy: where it was asked to run, the provider it really got, and
    where IO binding puts its outputs (None: a plain `session.run`)."""

    session: ort.InferenceSession
    placement: Placement
    provider: str
    bind_outputs_on: str | None = None

    @property
    def device(self) -> str:
        return device_name(self.provider)

    def run(self, output_names: list[str], inputs: Tensors) -> list[np.ndarray]:
        if self.bind_outputs_on is None:
            return list(self.session.run(output_names, inputs))
        return run_bound(
            self.session, output_names, inputs, self.bind_outputs_on, self.placement.device_id
        )

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "device": self.device,
            "device_id": self.placement.device_id if self.device != "cpu" else None,
            "io_binding": self.bind_outputs_on is not None,
        }


class Pool(Generic[T]):
    """Lends each borrower an item no one else holds; waits while all are lent out.
    The most recently returned item goes out first: under light load one session stays
    warm (caches, arena) instead of all of them in turn."""

    def __init__(self, items: list[T]) -> None:
        if not items:
            raise ValueError("a pool needs at least one item")
        self.size = len(items)
        self._free: queue.LifoQueue[T] = queue.LifoQueue()
        for item in items:
            self._free.put(item)

    @contextmanager
    def borrow(self, timeout_s: float | None = None) -> Iterator[T]:
        item = self._free.get(timeout=timeout_s)  # queue.Empty after timeout_s
        try:
            yield item
        finally:
            self._free.put(item)


def make_instance(entry: ModelEntry, where: Placement, threads: int, gpu: GpuOptions) -> Instance:
    requested = select_providers(where.device, where.device_id, gpu)
    session = ort.InferenceSession(
        str(entry.model_path), sess_options=session_options(threads), providers=requested
    )
    provider = active_provider(session)
    if requested_gpu(requested) and provider == CPU:
        log.warning(
            "%s: GPU %d was requested but the session fell back to CPU",
            entry.name,
            where.device_id,
        )
    bind = "cuda" if gpu.io_binding and device_name(provider) == "cuda" else None
    return Instance(session, where, provider, bind)


def _summary(values: list[str]) -> str:
    """One value when all instances agree, else each distinct one: 'cuda,cpu'."""
    return ",".join(dict.fromkeys(values))


class OnnxModel:
    backend = "onnxruntime"

    def __init__(
        self, entry: ModelEntry, *, device: str, threads: int = 0, gpu: GpuOptions | None = None
    ) -> None:
        gpu = gpu or GpuOptions()
        where = placements(entry.config, device, gpu.device_id)
        per_instance = threads_per_instance(threads, len(where))
        self.name = entry.name
        self.instances = [make_instance(entry, p, per_instance, gpu) for p in where]
        self._pool = Pool(self.instances)
        # The provider actually in use: a session that fell back to CPU shows as CPU.
        self.provider = _summary([i.provider for i in self.instances])
        self.device = _summary([i.device for i in self.instances])
        first = self.instances[0].session
        self.input_dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in first.get_inputs()}
        self.output_names = [o.name for o in first.get_outputs()]

    def _check(self, inputs: Tensors) -> None:
        missing = set(self.input_dtypes) - set(inputs)
        unknown = set(inputs) - set(self.input_dtypes)
        if missing or unknown:
            raise BadRequest(
                f"inputs do not match the model: missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}",
                code="input_mismatch",
            )

    def run(self, inputs: Tensors) -> Tensors:
        self._check(inputs)
        with self._pool.borrow() as instance:
            values = instance.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))

    def warm(self, inputs: Tensors) -> None:
        """Run every instance once: a GPU session's first run chooses its cuDNN
        algorithms or builds its TensorRT engine, which must not fall on a request."""
        self._check(inputs)
        for instance in self.instances:
            instance.run(self.output_names, inputs)
