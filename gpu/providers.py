"""Execution-provider selection: CUDA only when it is really usable, else CPU.

onnxruntime-gpu lists CUDAExecutionProvider whenever the wheel has it, even on a
machine without a GPU or without the CUDA libraries; a session created with it then
silently falls back to CPU. So "auto" probes the driver, and every caller checks
which provider a session really got (`active_provider`).
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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


def select_providers(device: str, device_id: int = 0) -> list[Any]:
    """Providers for an InferenceSession, in preference order."""
    if device == "cpu":
        return [CPU]
    usable = CUDA in ort.get_available_providers() and cuda_device_count() > 0
    if device == "cuda" and not usable:
        raise RuntimeError("AIDX_DEVICE=cuda but no usable CUDA device was found")
    if not usable:
        return [CPU]
    _preload_cuda_libraries()
    return [(CUDA, {"device_id": device_id}), CPU]


def active_provider(session: ort.InferenceSession) -> str:
    return str(session.get_providers()[0])


def device_name(provider: str) -> str:
    return "cuda" if provider == CUDA else "cpu"
