"""Tensor data types across Triton's model config, the KServe v2 protocol and numpy."""

from __future__ import annotations

import numpy as np

# KServe v2 datatype -> numpy dtype (BYTES is handled separately, as object arrays)
KSERVE_TO_NUMPY: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NUMPY_TO_KSERVE = {np.dtype(v).str: k for k, v in KSERVE_TO_NUMPY.items()}


def config_to_kserve(config_type_name: str) -> str:
    """Triton's config enum name (TYPE_FP32, TYPE_STRING) to the protocol name (FP32, BYTES)."""
    name = config_type_name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def kserve_of(array: np.ndarray) -> str:
    if array.dtype == np.object_:
        return "BYTES"
    return NUMPY_TO_KSERVE[array.dtype.str]
