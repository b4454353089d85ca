"""onnxruntime in-process: one session per model, shared by its executor threads
(InferenceSession.run is thread-safe and releases the GIL)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnxruntime as ort

from aidx.gpu.providers import (
    CPU,
    GpuOptions,
    active_provider,
    device_name,
    placement,
    requested_gpu,
    select_providers,
)
from aidx.inference.errors import BadRequest
from aidx.inference.repository import ModelEntry

log = logging.getLogger(__name__)

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


class OnnxModel:
    backend = "onnxruntime"

    def __init__(
        self, entry: ModelEntry, *, device: str, threads: int = 0, settings: Any = None
    ) -> None:
        options = session_options(threads)
        gpu = GpuOptions.from_settings(settings) if settings is not None else GpuOptions()
        where = placement(entry.config, device, gpu.device_id)  # instance_group pinning
        requested = select_providers(where.device, where.device_id, gpu)
        self.session = ort.InferenceSession(
            str(entry.model_path), sess_options=options, providers=requested
        )
        self.provider = active_provider(self.session)
        if requested_gpu(requested) and self.provider == CPU:
            log.warning("%s: a GPU was requested but the session fell back to CPU", entry.name)
        self.device = device_name(self.provider)
        self.input_dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_dtypes) - set(inputs)
        unknown = set(inputs) - set(self.input_dtypes)
        if missing or unknown:
            raise BadRequest(
                f"inputs do not match the model: missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}",
                code="input_mismatch",
            )
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values, strict=True))
