"""The models in service: load from the repository, warm up, and batch.

A model that cannot load (checksum mismatch, unreadable file, failing warm-up) stays
out of service with its reason, and readiness says so; the others serve on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aidx.gpu.providers import GpuOptions
from aidx.inference.batcher import BatcherConfig, BatchObserver, BatchResult, DynamicBatcher
from aidx.inference.dtypes import KSERVE_TO_NUMPY, config_to_kserve
from aidx.inference.errors import ModelUnavailable, NotFound
from aidx.inference.reports import ModelRef
from aidx.inference.repository import (
    ModelEntry,
    RepositoryError,
    load_entry,
    model_config_pb2,
    scan,
)
from aidx.inference.runtime import OnnxModel
from aidx.inference.runtime_triton import TritonModel, TritonOptions, follow_readiness
from aidx.inference.settings import Backend, Settings
from aidx.inference.settings_sections import TritonSettings
from aidx.inference.shadow import ShadowObserver, ShadowRunner
from aidx.inference.shadow_store import ShadowBatch

log = logging.getLogger(__name__)

_UNBOUNDED_QUEUE = 1024  # Triton's max_queue_size 0 means unbounded; we never are


class ModelState(enum.StrEnum):
    loading = "loading"
    ready = "ready"
    unavailable = "unavailable"


@dataclass
class ServedModel:
    entry: ModelEntry
    state: ModelState = ModelState.loading
    reason: str | None = None
    code: str | None = None  # the stable error code while unavailable
    runtime: OnnxModel | TritonModel | None = None
    batcher: DynamicBatcher | None = None
    shadow: ShadowRunner | None = None  # a candidate version run beside this one
    shadow_reason: str | None = None  # why a configured shadow does not run

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def ref(self) -> ModelRef:
        """How reports name the model: name, version, checksum, demo or not."""
        card = self.entry.card
        return ModelRef(
            name=self.name,
            version=self.entry.version,
            sha256=self.entry.sha256,
            demo_weights=bool(card and card.demo_weights),
        )


def batcher_config(
    config: Any, triton: TritonSettings | None = None, copies: int | None = None
) -> BatcherConfig:
    """`triton`: the settings' Triton section when the models run there (None: in
    process). `copies`: the model instances the runtime really made (e.g. `count` on
    each of a group's GPUs); one executor each, so none sits idle."""
    dynamic = config.dynamic_batching
    levels = max(int(dynamic.priority_levels), 1)
    queue = dynamic.default_queue_policy
    delay_us = int(dynamic.max_queue_delay_microseconds)
    instances = copies or sum(int(g.count) or 1 for g in config.instance_group) or 1
    if triton is not None:
        # Triton batches on the server: pass requests through (no added delay by
        # default), with enough in flight for the server to form its own batches.
        if triton.max_queue_delay_us is not None:
            delay_us = triton.max_queue_delay_us
        instances = max(instances, triton.concurrency)
    return BatcherConfig(
        max_batch_size=int(config.max_batch_size),
        max_queue_delay_us=delay_us,
        max_queue_size=int(queue.max_queue_size) or _UNBOUNDED_QUEUE,
        priority_levels=levels,
        default_priority=int(dynamic.default_priority_level) or levels,
        instance_count=instances,
        preferred_batch_sizes=tuple(sorted(int(n) for n in dynamic.preferred_batch_size)),
        cut_at_knee=triton is None,  # Triton forms its own batches from what we pass
    )


def _copies(runtime: OnnxModel | TritonModel) -> int | None:
    return len(runtime.instances) if isinstance(runtime, OnnxModel) else None


def default_timeout_s(config: Any) -> float | None:
    us = int(config.dynamic_batching.default_queue_policy.default_timeout_microseconds)
    return us / 1e6 if us else None


def warmup_inputs(config: Any) -> dict[str, np.ndarray]:
    """Zeros shaped as the config says (batch 1; variable dims as 1)."""
    inputs = {}
    for spec in config.input:
        dtype_name = model_config_pb2.DataType.Name(spec.data_type)
        dtype = KSERVE_TO_NUMPY[config_to_kserve(dtype_name)]
        dims = [d if d > 0 else 1 for d in spec.dims]
        shape = ([1] if config.max_batch_size > 0 else []) + dims
        inputs[spec.name] = np.zeros(shape, dtype=dtype)
    return inputs


class ModelService:
    def __init__(
        self,
        settings: Settings,
        observer: BatchObserver | None = None,
        *,
        shadow_record: Callable[[ShadowBatch], None] | None = None,
        shadow_observer: ShadowObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.shadow_record = shadow_record  # where comparisons are kept (the store)
        self.shadow_observer = shadow_observer
        self.models: dict[str, ServedModel] = {}
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        entries = scan(
            self.settings.model_repository,
            self.settings.enabled_models,
            self.settings.shadow.serving,
        )
        for entry in entries:
            self.models[entry.name] = ServedModel(entry)
        for served in self.models.values():
            await self.load(served)
        if self.settings.backend is Backend.triton:
            self._follower = asyncio.create_task(
                follow_readiness(self, self.settings.triton.poll_s), name="triton-readiness"
            )

    def _runtime(self, entry: ModelEntry, threads: int | None = None) -> OnnxModel | TritonModel:
        """`threads`: intra-op threads per instance (None: the CPU section's)."""
        if self.settings.backend is Backend.triton:
            options = TritonOptions.from_settings(self.settings.triton, port=self.settings.port)
            return TritonModel(entry, options)
        model = OnnxModel(
            entry,
            device=self.settings.device.value,
            threads=self.settings.cpu.threads_per_instance if threads is None else threads,
            gpu=GpuOptions.from_settings(self.settings.gpu),
        )
        if self.settings.warmup:  # every instance, not only the one `load` warms up
            model.warm(warmup_inputs(entry.config))
        return model

    async def load(self, served: ServedModel) -> None:
        entry = served.entry
        if entry.problem is not None:
            self.mark_unavailable(served, entry.problem)
            return
        try:
            runtime = await asyncio.to_thread(self._runtime, entry)
            if self.settings.warmup:
                await asyncio.to_thread(runtime.run, warmup_inputs(entry.config))
        except Exception as exc:  # keep the others serving; readiness reports it
            code = getattr(exc, "code", None) if isinstance(exc, ModelUnavailable) else None
            reason = str(exc) if code else f"failed to load: {type(exc).__name__}: {exc}"
            self.mark_unavailable(served, reason, code=code)
            return
        served.runtime = runtime
        served.shadow = await self._load_shadow(served)
        run = served.shadow.tap(runtime.run) if served.shadow else runtime.run
        served.batcher = DynamicBatcher(
            entry.name,
            run,
            batcher_config(entry.config, self._triton(), copies=_copies(runtime)),
            self.observer,
        )
        served.batcher.start()
        served.state, served.reason, served.code = ModelState.ready, None, None
        log.info("model %s v%d ready on %s", entry.name, entry.version, runtime.provider)

    def shadow_version(self, entry: ModelEntry) -> int | None:
        """The setting AIDX_SHADOW_VERSIONS (0: none) over the card's `shadow:`."""
        configured = self.settings.shadow.versions.get(entry.name)
        version = configured if configured is not None else (entry.card and entry.card.shadow)
        return version if version and version != entry.version else None

    async def _load_shadow(self, served: ServedModel) -> ShadowRunner | None:
        """The shadow version, loaded and started; a shadow that cannot load is logged
        and left out (`shadow_reason`): the serving version serves on regardless."""
        version = self.shadow_version(served.entry)
        served.shadow_reason = None
        if version is None:
            return None
        try:
            entry = await asyncio.to_thread(load_entry, served.entry.directory, version=version)
            if entry.problem is not None:
                raise RepositoryError(entry.problem)
            runtime = await asyncio.to_thread(self._runtime, entry, self.settings.shadow.threads)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the shadow out only
            served.shadow_reason = f"shadow v{version} did not load: {exc}"
            log.error("model %s: %s", served.name, served.shadow_reason)
            return None
        shadow = ShadowRunner(
            served.entry, entry, runtime.run,
            queue_size=self.settings.shadow.queue_size, nice=self.settings.shadow.nice,
            record=self.shadow_record, observer=self.shadow_observer,
        )  # fmt: skip
        shadow.start()
        log.info("model %s: v%d in shadow beside v%d", served.name, version, served.entry.version)
        return shadow

    def mark_unavailable(
        self, served: ServedModel, reason: str, *, code: str | None = None
    ) -> None:
        served.state = ModelState.unavailable
        served.reason = reason
        served.code = code
        log.error("model %s is out of service: %s", served.name, reason)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for served in self.models.values():
            if served.batcher is not None:
                await served.batcher.stop()
            if served.shadow is not None:
                await asyncio.to_thread(served.shadow.stop)
            if isinstance(served.runtime, TritonModel):  # its shared-memory regions
                await asyncio.to_thread(served.runtime.close)

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.state is ModelState.ready for m in self.models.values())

    def find(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        return served

    def get_ready(self, name: str) -> ServedModel:
        served = self.find(name)
        if served.state is not ModelState.ready:
            raise ModelUnavailable(
                f"model {name!r} is not in service: {served.reason}", code=served.code
            )
        return served

    def _triton(self) -> TritonSettings | None:
        """The Triton section when the models run on Triton, else None."""
        return self.settings.triton if self.settings.backend is Backend.triton else None

    def for_pipeline(self, pipeline: str) -> ServedModel:
        """The configured model for a pipeline, else the first whose card names it."""
        chosen = self.settings.pipeline_models.get(pipeline)
        if chosen is not None:
            return self.get_ready(chosen)
        for served in self.models.values():
            card = served.entry.card
            if card is not None and card.pipeline == pipeline:
                return self.get_ready(served.name)
        raise ModelUnavailable(f"no model for the {pipeline} pipeline is configured")

    async def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        *,
        priority: int | None = None,
        timeout_s: float | None = None,
    ) -> BatchResult:
        served = self.get_ready(name)
        assert served.batcher is not None
        timeout = timeout_s if timeout_s is not None else default_timeout_s(served.entry.config)
        if timeout is None:
            timeout = self.settings.default_deadline_ms / 1000
        return await served.batcher.infer(inputs, priority=priority, timeout_s=timeout)
