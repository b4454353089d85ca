"""Execution-provider selection: CUDA (and TensorRT) only when really usable, else CPU.

onnxruntime-gpu lists CUDAExecutionProvider whenever the wheel has it, even on a
machine without a GPU or without the CUDA libraries; a session created with it then
silently falls back to CPU. So "auto" probes the driver, and every caller checks
which provider a session really got (`active_provider`).

Provider options come from settings (`GpuOptions`): device id, TensorRT with fp16 and
an engine cache, cuDNN's convolution algorithm search, and a CUDA memory arena cap.
A model's `instance_group` says how many copies run where (`placements`), as in
Triton: `count` copies per group, on the CPU for KIND_CPU, and on each GPU listed in
`gpus` for KIND_GPU (the default GPU when it lists none).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_GPU_PROVIDERS = (CUDA, TENSORRT)


@dataclass(frozen=True)
class GpuOptions:
    device_id: int = 0
    tensorrt: bool = False
    fp16: bool = False
    trt_engine_cache_dir: Path | None = None
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    gpu_mem_limit_bytes: int | None = None
    io_binding: bool = True  # CUDA/TensorRT sessions run through IO binding

    @classmethod
    def from_settings(cls, gpu: Any) -> GpuOptions:
        """From the settings' `gpu` section (aidx.inference.settings_sections.GpuSettings)."""
        return cls(
            device_id=gpu.device_id,
            tensorrt=gpu.tensorrt,
            fp16=gpu.fp16,
            trt_engine_cache_dir=gpu.trt_engine_cache_dir,
            cudnn_conv_algo_search=str(gpu.cudnn_conv_algo_search),
            gpu_mem_limit_bytes=gpu.mem_limit_bytes,
            io_binding=gpu.io_binding,
        )


@dataclass(frozen=True)
class Placement:
    """Where one model instance runs: `device` cpu or cuda, on GPU `device_id`."""

    device: str
    device_id: int


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver reports; 0 when there is no driver or no device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _preload_cuda_libraries() -> None:
    # torch's wheels bring the CUDA/cuDNN libraries; let onnxruntime find them.
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # a partial CUDA install must not stop CPU serving
            log.warning("onnxruntime.preload_dlls failed: %s", exc)


def cuda_options(options: GpuOptions, device_id: int) -> dict[str, str]:
    values = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
        "arena_extend_strategy": "kSameAsRequested",  # grow by what is asked, not 2x
    }
    if options.gpu_mem_limit_bytes is not None:
        values["gpu_mem_limit"] = str(options.gpu_mem_limit_bytes)
    return values


def tensorrt_options(options: GpuOptions, device_id: int) -> dict[str, str]:
    values = {"device_id": str(device_id), "trt_fp16_enable": str(options.fp16)}
    if options.trt_engine_cache_dir is not None:
        cache = str(options.trt_engine_cache_dir)
        values.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=cache,
            trt_timing_cache_enable="True",
            trt_timing_cache_path=cache,
        )
    if options.gpu_mem_limit_bytes is not None:
        values["trt_max_workspace_size"] = str(options.gpu_mem_limit_bytes)
    return values


# model_config_pb2.ModelInstanceGroup.Kind: KIND_AUTO 0, KIND_GPU 1, KIND_CPU 2, KIND_MODEL 3
_KIND_CPU = 2


def gpu_usable() -> bool:
    """onnxruntime has the CUDA provider and the driver reports a device."""
    return CUDA in ort.get_available_providers() and cuda_device_count() > 0


def placements(config: Any, device: str, default_device_id: int = 0) -> list[Placement]:
    """One Placement per model instance, as `instance_group` asks within what settings
    allow. On a GPU: `count` per group, on each of its `gpus` (Triton's rule), KIND_CPU
    groups on the CPU. On the CPU (AIDX_DEVICE=cpu, or auto without a usable GPU):
    `count` per group, so that a config written for GPUs does not multiply CPU copies."""
    if device == "auto":
        device = "cuda" if gpu_usable() else "cpu"
    groups = list(getattr(config, "instance_group", []))
    if not groups:
        return [Placement(device, 0 if device == "cpu" else default_device_id)]
    out: list[Placement] = []
    for group in groups:
        count = int(group.count) or 1
        if device == "cpu" or int(group.kind) == _KIND_CPU:
            out += [Placement("cpu", 0)] * count
            continue
        for gpu in [int(n) for n in group.gpus] or [default_device_id]:
            out += [Placement(device, gpu)] * count
    return out


def select_providers(
    device: str, device_id: int = 0, options: GpuOptions | None = None
) -> list[Any]:
    """Providers for an InferenceSession, in preference order."""
    if device == "cpu":
        return [CPU]
    options = options or GpuOptions(device_id=device_id)
    available = ort.get_available_providers()
    count = cuda_device_count()
    usable = CUDA in available and count > 0
    if device == "cuda" and not usable:
        raise RuntimeError("AIDX_DEVICE=cuda but no usable CUDA device was found")
    if not usable:
        return [CPU]
    if device_id >= count:
        raise RuntimeError(f"GPU {device_id} was asked for; this machine has {count}")
    _preload_cuda_libraries()
    providers: list[Any] = []
    if options.tensorrt:
        if TENSORRT in available:
            providers.append((TENSORRT, tensorrt_options(options, device_id)))
        else:
            log.warning("AIDX_GPU_TENSORRT is set but this onnxruntime has no TensorRT EP")
    providers += [(CUDA, cuda_options(options, device_id)), CPU]
    return providers


def active_provider(session: ort.InferenceSession) -> str:
    return str(session.get_providers()[0])


def device_name(provider: str) -> str:
    return "cuda" if provider in _GPU_PROVIDERS else "cpu"


def requested_gpu(providers: list[Any]) -> bool:
    first = providers[0]
    return (first[0] if isinstance(first, tuple) else first) in _GPU_PROVIDERS
